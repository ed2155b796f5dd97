// One analysis: status and every dispatch attempt, parameters, input filters and hash, results
// (nested, expandable, downloadable as JSON), every plot with its download, the corner plot.
import {
  api, clear, errorBox, fmtDuration, h, statusBadge, timeEl,
} from './lib.js';

const POSTERIOR_KEYS = ['corner', 'inference_data', 'posterior_samples', 'posteriors'];

function timeline(analysis, attempts) {
  const items = [h('li', { class: '' }, h('strong', {}, 'Created'), ' ', timeEl(analysis.created_at))];
  for (const a of attempts) {
    const ok = a.outcome === 'accepted' || (a.http_status && a.http_status < 300);
    items.push(h('li', { class: ok ? 'ok' : 'bad', 'data-attempt': a.attempt_number },
      h('strong', {}, `Attempt ${a.attempt_number}`), ' ', timeEl(a.started_at), ' · ',
      h('span', { class: 'pill' }, a.outcome || '—'),
      a.http_status ? h('span', { class: 'pill mono' }, `HTTP ${a.http_status}`) : null,
      a.latency_ms !== null && a.latency_ms !== undefined ? h('span', { class: 'pill' }, `${Math.round(a.latency_ms)} ms`) : null,
      a.error ? h('div', { class: 'small error' }, a.error) : null));
  }
  const final = ['completed', 'failure', 'timed_out', 'cancelled'].includes(analysis.status);
  items.push(h('li', { class: analysis.status === 'completed' ? 'ok' : final ? 'bad' : '' },
    statusBadge(analysis.status), ' ', timeEl(analysis.last_activity),
    analysis.status_message ? h('div', { class: 'small' }, analysis.status_message) : null));
  return h('ol', { class: 'timeline', id: 'timeline' }, items);
}

// A value as a table: objects and lists of any depth open on demand.
export function valueTree(value, depth = 0) {
  if (value === null || typeof value !== 'object') {
    return h('span', { class: 'mono' }, value === null ? 'null' : typeof value === 'string' ? value : JSON.stringify(value));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  if (Array.isArray(value) && value.length && value.every((v) => v === null || typeof v !== 'object') && value.length <= 12) {
    return h('span', { class: 'mono' }, JSON.stringify(value));
  }
  const table = h('table', { class: 'results' }, entries.map(([key, v]) => h('tr', {},
    h('th', { class: 'mono', scope: 'row' }, String(key)), h('td', {}, valueTree(v, depth + 1)))));
  if (depth === 0) return table;
  const label = Array.isArray(value) ? `list of ${value.length}` : `${entries.length} fields`;
  return h('details', { class: 'tree' }, h('summary', {}, label), table);
}

function facts(analysis) {
  return h('dl', { class: 'facts' },
    h('dt', {}, 'Service'), h('dd', {}, analysis.analysis_service_name),
    h('dt', {}, 'Source'), h('dd', {}, h('a', { href: `/source/${encodeURIComponent(analysis.obj_id)}`, id: 'back' }, analysis.obj_id)),
    h('dt', {}, 'Started by'), h('dd', { id: 'started-by' }, analysis.default_analysis_id
      ? [h('a', { href: '/services' }, `default analysis #${analysis.default_analysis_id}`), analysis.trigger ? `: ${analysis.trigger}` : '']
      : 'a user'),
    h('dt', {}, 'Duration'), h('dd', {}, fmtDuration(analysis.duration)),
    h('dt', {}, 'Groups'), h('dd', {}, analysis.groups.map((g) => h('span', { class: 'pill' }, g.name))),
    h('dt', {}, 'Parameters'), h('dd', { id: 'parameters' }, valueTree(analysis.analysis_parameters || {})),
    h('dt', {}, 'Input filters'), h('dd', { id: 'input-filters' }, Object.keys(analysis.input_filters || {}).length ? valueTree(analysis.input_filters) : 'all data'),
    h('dt', {}, 'Input hash'), h('dd', { class: 'mono', id: 'input-hash' }, analysis.input_hash || '—'),
    h('dt', {}, 'Model'), h('dd', {}, analysis.model_name || '—'));
}

function plots(analysis) {
  const figures = [];
  for (let n = 0; n < analysis.num_plots; n += 1) {
    const src = `/api/obj/analysis/${analysis.id}/plots/${n}`;
    figures.push(h('figure', { 'data-plot': n },
      h('img', { src, alt: `Plot ${n + 1} of analysis ${analysis.id}`, loading: 'lazy' }),
      h('figcaption', { class: 'row small' }, `Plot ${n + 1}`, h('span', { class: 'spacer' }),
        h('a', { href: src, download: `analysis-${analysis.id}-plot-${n + 1}.png` }, 'Download'))));
  }
  const hasPosterior = POSTERIOR_KEYS.some((k) => k in (analysis.artifacts || {}));
  if (hasPosterior) {
    const src = `/api/obj/analysis/${analysis.id}/corner`;
    const img = h('img', { src, alt: `Corner plot of analysis ${analysis.id}`, id: 'corner' });
    const figure = h('figure', { 'data-plot': 'corner' }, img,
      h('figcaption', { class: 'row small' }, 'Corner plot of the posterior', h('span', { class: 'spacer' }),
        h('a', { href: src, download: `analysis-${analysis.id}-corner.png` }, 'Download')));
    img.addEventListener('error', () => clear(figure, h('p', { class: 'muted' }, 'The corner plot could not be drawn from this posterior.')));
    figures.push(figure);
  }
  if (!figures.length) return h('p', { class: 'muted' }, 'No plots.');
  return h('div', { class: 'plots' }, figures);
}

export async function render(main, profile, analysisId) {
  const [analysis, attempts] = await Promise.all([
    api('GET', `/api/obj/analysis/${analysisId}`),
    api('GET', `/api/obj/analysis/${analysisId}/attempts`),
  ]);
  document.title = `Analysis #${analysis.id} · skyhook`;
  const results = h('div', { id: 'results' }, h('p', { class: 'muted' }, 'Loading…'));
  clear(main,
    h('div', { class: 'row' }, h('a', { href: `/source/${encodeURIComponent(analysis.obj_id)}` }, `← ${analysis.obj_id}`)),
    h('div', { class: 'row' }, h('h1', {}, `Analysis #${analysis.id}`), statusBadge(analysis.status)),
    h('div', { class: 'grid' },
      h('div', {},
        h('section', { class: 'card' }, h('h2', {}, 'Plots'), plots(analysis)),
        h('section', { class: 'card' },
          h('div', { class: 'row' }, h('h2', {}, 'Results'), h('span', { class: 'spacer' }),
            h('a', { class: 'button', id: 'results-download', href: `/api/obj/analysis/${analysis.id}/results?download=true`, download: `analysis-${analysis.id}-results.json` }, 'Download JSON')),
          results)),
      h('div', {},
        h('section', { class: 'card' }, h('h2', {}, 'Status'), timeline(analysis, attempts)),
        h('section', { class: 'card' }, h('h2', {}, 'Details'), facts(analysis)))));
  try {
    clear(results, h('div', { class: 'table-wrap' }, valueTree(await api('GET', `/api/obj/analysis/${analysis.id}/results`))));
  } catch (error) {
    clear(results, error.status === 404 ? h('p', { class: 'muted' }, error.message) : errorBox(error));
    main.querySelector('#results-download').remove();
  }
  main.setAttribute('data-ready', 'true');
}
