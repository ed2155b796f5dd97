// Source statistics: one photometry statistic against another over every source the user may
// read (GET /api/phot_stats/aggregate), a colour per classification; a point opens its source.
import { api, clear, errorBox, h, loadPlotly } from './lib.js';
import { filterColours } from './plot.js';

const DEFAULT_X = 'rise_rate';
const DEFAULT_Y = 'peak_mag_global';
const UNCLASSIFIED = 'unclassified';
const MAGNITUDE = /mag|limit/;

function fieldSelect(id, fields, chosen) {
  return h('select', { id, name: id }, fields.map((f) => h('option', { value: f.value, selected: f.value === chosen }, f.label)));
}

async function drawScatter(element, answer, fields, labels) {
  const Plotly = await loadPlotly();
  const byClass = {};
  for (const p of answer.points) (byClass[p.classification || UNCLASSIFIED] ||= []).push(p);
  const colours = filterColours(Object.keys(byClass));
  const traces = Object.entries(byClass).sort().map(([name, points]) => ({
    name, type: 'scatter', mode: 'markers', marker: { size: 8, color: colours[name], opacity: 0.85 },
    x: points.map((p) => p.x), y: points.map((p) => p.y), customdata: points.map((p) => p.id),
    hovertemplate: `%{customdata}<br>${labels.x}: %{x}<br>${labels.y}: %{y}<extra>${name}</extra>`,
  }));
  const layout = {
    margin: { l: 60, r: 12, t: 12, b: 40 }, hovermode: 'closest', paper_bgcolor: '#fff', plot_bgcolor: '#fff',
    legend: { orientation: 'h', y: -0.22, yanchor: 'top' },
    xaxis: { title: { text: labels.x, standoff: 6 }, autorange: MAGNITUDE.test(fields.x) ? 'reversed' : true },
    yaxis: { title: { text: labels.y }, autorange: MAGNITUDE.test(fields.y) ? 'reversed' : true },
  };
  await Plotly.react(element, traces, layout, { responsive: true, displaylogo: false });
  element.removeAllListeners?.('plotly_click');
  element.on('plotly_click', (event) => {
    const point = event.points[0];
    if (point) location.assign(`/source/${encodeURIComponent(point.customdata)}`);
  });
}

export async function render(main) {
  loadPlotly();
  const params = new URLSearchParams(location.search);
  const { fields } = await api('GET', '/api/phot_stats/aggregate');
  const labels = Object.fromEntries(fields.map((f) => [f.value, f.label]));
  const x = fieldSelect('xField', fields, params.get('xField') || DEFAULT_X);
  const y = fieldSelect('yField', fields, params.get('yField') || DEFAULT_Y);
  const classes = h('input', { id: 'classifications', name: 'classifications', placeholder: 'e.g. Ia, II', value: params.get('classifications') || '' });
  const plot = h('div', { class: 'plot', id: 'stats-plot' });
  const status = h('div', { id: 'stats-status' });

  async function load() {
    const query = new URLSearchParams({ xField: x.value, yField: y.value });
    const wanted = classes.value.split(',').map((c) => c.trim()).filter(Boolean).join(',');
    if (wanted) query.set('classifications', wanted);
    history.replaceState(null, '', `/source_stats?${query}`);
    plot.removeAttribute('data-drawn');
    try {
      const answer = await api('GET', `/api/phot_stats/aggregate?${query}`);
      clear(status, h('p', { class: 'muted small', id: 'stats-count' },
        `${answer.count} sources${answer.truncated ? ' (truncated)' : ''}; sources without both values are left out.`));
      await drawScatter(plot, answer, { x: x.value, y: y.value }, { x: labels[x.value], y: labels[y.value] });
      plot.setAttribute('data-drawn', query.toString());
    } catch (error) {
      clear(status, errorBox(error));
    }
  }

  const form = h('form', { id: 'stats-form', class: 'row', onsubmit: (event) => { event.preventDefault(); load(); } },
    h('label', { class: 'field' }, h('span', {}, 'x'), x),
    h('label', { class: 'field' }, h('span', {}, 'y'), y),
    h('label', { class: 'field' }, h('span', {}, 'Classifications'), classes),
    h('button', { type: 'submit', class: 'primary', id: 'plot-stats' }, 'Plot'));
  x.addEventListener('change', load);
  y.addEventListener('change', load);
  document.title = 'Source statistics · skyhook';
  clear(main, h('h1', {}, 'Source statistics'),
    h('section', { class: 'card' }, form, status, plot));
  await load();
  main.setAttribute('data-ready', 'true');
}
