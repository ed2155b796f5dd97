// The periodogram page: the light curve, power against period from the server's periodogram
// (GET /api/sources/<id>/periodogram), the folded light curve at the chosen period, and
// "save period as annotation".
import { allPages, api, can, clear, errorBox, fmtNumber, h, loadPlotly } from './lib.js';
import { drawPhotometry, filterColours } from './plot.js';

const MULTIPLES = [[0.5, '½'], [2, '2×'], [3, '3×']];
const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ['lasso2d', 'select2d'] };
const BASE_LAYOUT = { hovermode: 'closest', paper_bgcolor: '#fff', plot_bgcolor: '#fff', dragmode: 'zoom' };

function fmtFap(value) {
  if (value === null || value === undefined) return '—';
  return value < 1e-3 ? Number(value).toExponential(1) : fmtNumber(value, 3);
}

function checkboxes(name, options) {
  return h('span', { class: 'seg', id: `${name}-choices` }, options.map(([value, label]) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name, value: String(value), checked: true }), label)));
}

function numberField(name, label, attrs) {
  return h('label', { class: 'field' }, h('span', {}, label), h('input', { type: 'number', name, id: name, step: 'any', ...attrs }));
}

function selectField(name, label, options) {
  return h('label', { class: 'field' }, h('span', {}, label),
    h('select', { name, id: name }, options.map(([value, text]) => h('option', { value }, text))));
}

// The query for the periodogram from the form; empty fields take the server's defaults.
function queryFrom(form) {
  const query = new URLSearchParams();
  const chosen = (name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value);
  query.set('filters', chosen('band').join(','));
  query.set('instrument_ids', chosen('instrument').join(','));
  for (const name of ['min_period', 'max_period', 'samples_per_peak', 'method', 'nterms']) {
    const value = form.elements[name].value.trim();
    if (value) query.set(name, value);
  }
  query.set('n_peaks', '10');
  return query;
}

async function drawPower(element, answer, onPick) {
  const Plotly = await loadPlotly();
  const best = answer.best_period;
  const marks = [[1, 'best'], ...MULTIPLES].filter(([m]) => {
    const p = best * m;
    return p >= answer.frequency_grid.min_period && p <= answer.frequency_grid.max_period;
  });
  const shapes = marks.map(([m]) => ({
    type: 'line', xref: 'x', yref: 'paper', x0: best * m, x1: best * m, y0: 0, y1: 1,
    line: { color: m === 1 ? '#c0392b' : '#b7791f', width: m === 1 ? 2 : 1, dash: m === 1 ? 'solid' : 'dot' },
  }));
  const annotations = marks.map(([m, label]) => ({
    x: Math.log10(best * m), y: 1, xref: 'x', yref: 'paper', yanchor: 'bottom', showarrow: false,
    text: m === 1 ? 'P' : label, font: { size: 11 },
  }));
  const traces = [
    { x: answer.periods, y: answer.power, type: 'scatter', mode: 'lines', name: 'power', line: { color: '#2f5bd3', width: 1 } },
    {
      x: answer.peaks.map((p) => p.period), y: answer.peaks.map((p) => p.power), type: 'scatter', mode: 'markers',
      name: 'peaks', marker: { size: 10, color: '#c0392b', symbol: 'diamond' },
      customdata: answer.peaks.map((p) => fmtFap(p.false_alarm_probability)),
      hovertemplate: 'P = %{x:.5f} d<br>power %{y:.3f}<br>FAP %{customdata}<extra></extra>',
    },
  ];
  const layout = {
    ...BASE_LAYOUT, shapes, annotations, showlegend: false, margin: { l: 52, r: 12, t: 22, b: 40 },
    xaxis: { type: 'log', title: { text: 'period (days)', standoff: 6 } },
    yaxis: { title: { text: 'power' }, rangemode: 'tozero' },
  };
  await Plotly.react(element, traces, layout, PLOT_CONFIG);
  element.removeAllListeners?.('plotly_click');
  element.on('plotly_click', (event) => {
    const point = event.points[0];
    if (point) onPick(point.x);
  });
}

// Two cycles of the points folded at `period`, a trace per band, magnitudes up.
async function drawFolded(element, points, period) {
  const Plotly = await loadPlotly();
  const detected = points.filter((p) => p.mag !== null && p.mag !== undefined);
  const epoch = Math.min(...detected.map((p) => p.mjd));
  const colours = filterColours(new Set(detected.map((p) => p.filter)));
  const traces = Object.keys(colours).map((band) => {
    const rows = detected.filter((p) => p.filter === band);
    const phase = rows.map((p) => (((p.mjd - epoch) / period) % 1 + 1) % 1);
    return {
      name: band, type: 'scatter', mode: 'markers', marker: { color: colours[band], size: 6 },
      x: [...phase, ...phase.map((x) => x + 1)], y: [...rows, ...rows].map((p) => p.mag),
      error_y: { type: 'data', array: [...rows, ...rows].map((p) => p.magerr || 0), thickness: 1, width: 0, color: colours[band] },
    };
  });
  const layout = {
    ...BASE_LAYOUT, margin: { l: 56, r: 12, t: 12, b: 40 }, legend: { orientation: 'h', y: -0.16, yanchor: 'top' },
    xaxis: { title: { text: `phase (P = ${fmtNumber(period, 6)} d, two cycles)`, standoff: 6 }, range: [0, 2] },
    yaxis: { title: { text: 'AB magnitude' }, autorange: 'reversed' },
  };
  await Plotly.react(element, traces, layout, PLOT_CONFIG);
}

class PeriodogramPage {
  constructor(main, profile, source, points) {
    this.main = main;
    this.profile = profile;
    this.source = source;
    this.points = points;
    this.answer = null;
    this.picked = null; // the period chosen on the power plot, before the multiplier
    this.lightCurve = h('div', { class: 'plot', id: 'lightcurve-plot' });
    this.power = h('div', { class: 'plot', id: 'power-plot' });
    this.folded = h('div', { class: 'plot', id: 'folded-plot' });
    this.status = h('div', { id: 'periodogram-status' });
    this.chosen = h('div', { id: 'chosen' });
    this.peaks = h('div', { id: 'peaks' });
    this.multiplier = h('select', { id: 'multiplier', onchange: () => this.showChosen() },
      [[1, '× 1'], [0.5, '× ½'], [2, '× 2'], [3, '× 3']].map(([v, t]) => h('option', { value: v }, t)));
    this.form = this.controls();
  }

  controls() {
    const bands = [...new Set(this.points.map((p) => p.filter))].sort();
    const instruments = new Map(this.points.map((p) => [p.instrument_id, p.instrument_name]));
    return h('form', {
      id: 'periodogram-form', onsubmit: (event) => { event.preventDefault(); this.compute(); },
      onchange: (event) => { if (event.target.type === 'checkbox') this.drawLightCurve(); },
    },
    h('div', { class: 'field' }, h('span', {}, 'Bands'), checkboxes('band', bands.map((b) => [b, b]))),
    h('div', { class: 'field' }, h('span', {}, 'Instruments'),
      checkboxes('instrument', [...instruments].sort((a, b) => a[0] - b[0]))),
    h('div', { class: 'fields' },
      numberField('min_period', 'Min period (d)', { min: 0, placeholder: '0.2' }),
      numberField('max_period', 'Max period (d)', { min: 0, placeholder: 'time span' }),
      numberField('samples_per_peak', 'Samples per peak', { min: 1, max: 100, step: 1, placeholder: '10' }),
      selectField('method', 'Method', [['', 'auto'], ['multiband', 'multiband'], ['ls', 'Lomb-Scargle per band']]),
      selectField('nterms', 'Fourier terms', [['1', '1'], ['2', '2'], ['3', '3']])),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary', id: 'compute' }, 'Compute periodogram')));
  }

  selectedPoints() {
    const chosen = (name) => new Set([...this.form.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value));
    const bands = chosen('band');
    const instruments = chosen('instrument');
    return this.points.filter((p) => bands.has(p.filter) && instruments.has(String(p.instrument_id)));
  }

  drawLightCurve() {
    return drawPhotometry(this.lightCurve, this.selectedPoints(), 'mag', []);
  }

  async compute() {
    const id = encodeURIComponent(this.source.id);
    const button = this.form.querySelector('#compute');
    button.disabled = true;
    clear(this.status, h('p', { class: 'muted' }, 'Computing…'));
    try {
      this.answer = await api('GET', `/api/sources/${id}/periodogram?${queryFrom(this.form)}`);
      const a = this.answer;
      const grid = a.frequency_grid;
      clear(this.status, h('p', { class: 'muted small' },
        `${a.method}${a.best_band ? ` (best band ${a.best_band})` : ''}, nterms ${a.nterms}; `,
        Object.entries(a.n_points).map(([b, n]) => `${b}: ${n} points`).join(', '),
        `; ${grid.n_frequencies} frequencies over ${fmtNumber(grid.min_period, 4)}–${fmtNumber(grid.max_period, 2)} d`,
        a.n_non_detections ? `; ${a.n_non_detections} non-detections left out` : ''));
      this.multiplier.value = '1';
      await drawPower(this.power, a, (period) => this.pick(period));
      this.pick(a.best_period);
      this.power.setAttribute('data-best-period', String(a.best_period));
    } catch (error) {
      clear(this.status, errorBox(error));
    } finally {
      button.disabled = false;
    }
  }

  // Chooses a period: a click near a peak (within 1 %) picks that peak and its FAP.
  pick(period) {
    const near = this.answer.peaks.find((p) => Math.abs(p.period - period) / p.period < 0.01);
    this.picked = near ? near.period : period;
    this.multiplier.value = '1';
    this.showChosen();
  }

  period() {
    return this.picked * Number(this.multiplier.value);
  }

  peakOf(period) {
    return this.answer.peaks.find((p) => Math.abs(p.period - period) / p.period < 1e-9) || null;
  }

  showChosen() {
    if (this.picked === null) return;
    const period = this.period();
    const peak = this.peakOf(period);
    clear(this.peaks, h('span', { class: 'muted small' }, 'Peaks: '), this.answer.peaks.map((p, n) => h('button', {
      type: 'button', class: `link${Math.abs(p.period - this.picked) < 1e-12 ? ' chosen' : ''}`, 'data-peak': n,
      onclick: () => this.pick(p.period),
    }, `${fmtNumber(p.period, 5)} d`)));
    const canSave = can(this.profile, 'Upload Data');
    clear(this.chosen,
      h('dl', { class: 'facts' },
        h('dt', {}, 'Period'), h('dd', { class: 'mono', id: 'chosen-period', 'data-period': String(period) }, `${fmtNumber(period, 6)} d`),
        h('dt', {}, 'Multiplier'), h('dd', {}, this.multiplier),
        h('dt', {}, 'Power'), h('dd', {}, peak ? fmtNumber(peak.power, 3) : '—'),
        h('dt', {}, 'False-alarm probability'), h('dd', { id: 'chosen-fap' },
          peak ? `${fmtFap(peak.false_alarm_probability)} (${this.answer.false_alarm_method})` : 'not a reported peak')),
      canSave ? h('div', { class: 'row' }, h('button', { type: 'button', id: 'save-period', onclick: () => this.save() }, 'Save period as annotation')) : null,
      h('div', { id: 'save-status' }));
    this.folded.removeAttribute('data-period');
    drawFolded(this.folded, this.selectedPoints(), period).then(() => this.folded.setAttribute('data-period', String(period)));
  }

  async save() {
    const period = this.period();
    const peak = this.peakOf(period);
    const data = { period, method: this.answer.method, nterms: this.answer.nterms, bands: this.answer.bands };
    if (peak) Object.assign(data, { power: peak.power, false_alarm_probability: peak.false_alarm_probability });
    const status = this.chosen.querySelector('#save-status');
    try {
      await api('POST', `/api/sources/${encodeURIComponent(this.source.id)}/annotations`, { origin: 'periodogram', data });
      clear(status, h('p', { class: 'notice', role: 'status' }, `Saved period ${fmtNumber(period, 6)} d as an annotation.`));
    } catch (error) {
      clear(status, errorBox(error));
    }
  }

  render(saved) {
    clear(this.main,
      h('div', { class: 'row' }, h('a', { href: `/source/${encodeURIComponent(this.source.id)}` }, `← ${this.source.id}`)),
      h('h1', {}, `Periodogram · ${this.source.id}`),
      saved ? h('p', { class: 'muted', id: 'saved-period' }, `Saved period: ${fmtNumber(saved.data.period, 6)} d`) : null,
      h('div', { class: 'grid' },
        h('div', {},
          h('section', { class: 'card' }, h('h2', {}, 'Light curve'), this.lightCurve),
          h('section', { class: 'card', id: 'power' }, h('h2', {}, 'Power'), this.status, this.power, this.peaks),
          h('section', { class: 'card' }, h('h2', {}, 'Folded light curve'), this.folded)),
        h('div', {},
          h('section', { class: 'card', id: 'controls' }, h('h2', {}, 'Periodogram'), this.form),
          h('section', { class: 'card', id: 'chosen-card' }, h('h2', {}, 'Chosen period'), this.chosen))));
  }
}

export async function render(main, profile, objId) {
  const id = encodeURIComponent(objId);
  loadPlotly();
  const [source, points, annotations] = await Promise.all([
    api('GET', `/api/sources/${id}`),
    allPages(`/api/sources/${id}/photometry`, 'photometry'),
    api('GET', `/api/sources/${id}/annotations`),
  ]);
  document.title = `Periodogram · ${source.id} · skyhook`;
  const page = new PeriodogramPage(main, profile, source, points);
  page.render(annotations.find((a) => a.origin === 'periodogram' && a.data && a.data.period));
  if (!points.length) {
    clear(page.status, h('p', { class: 'muted' }, 'No photometry you can see.'));
    return;
  }
  await page.drawLightCurve();
  await page.compute();
  main.setAttribute('data-ready', 'true');
}
