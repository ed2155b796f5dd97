// The sources list: paginated, searchable by id, filtered by photometry statistics, with
// analysis counts by status.
import { api, h, clear, errorBox, fmtNumber, statusBadge } from './lib.js';

const PAGE_SIZE = 25;
// The sources API's photometry filters: [query name, label, input type].
const FILTERS = [
  ['numberDetections', 'Detections at least', 'number'],
  ['firstDetectionAfter', 'First detection after', 'date'],
  ['lastDetectionBefore', 'Last detection before', 'date'],
  ['minPeakMagnitude', 'Peak mag at least', 'number'],
  ['maxPeakMagnitude', 'Peak mag at most', 'number'],
];

function filterForm(values, onApply) {
  const form = h('form', {
    id: 'source-filters', class: 'card',
    onsubmit: (event) => {
      event.preventDefault();
      onApply(Object.fromEntries(FILTERS.map(([name]) => [name, form.elements[name].value.trim()])));
    },
  },
  h('div', { class: 'fields' }, FILTERS.map(([name, label, type]) => h('label', { class: 'field' }, h('span', {}, label),
    h('input', { name, id: `filter-${name}`, type, step: 'any', value: values[name] || '' })))),
  h('div', { class: 'row' },
    h('button', { type: 'submit', class: 'primary', id: 'apply-filters' }, 'Apply filters'),
    h('button', { type: 'button', id: 'clear-filters', onclick: () => { form.reset(); FILTERS.forEach(([n]) => { form.elements[n].value = ''; }); form.requestSubmit(); } }, 'Clear')));
  return form;
}

function countsCell(counts) {
  const entries = Object.entries(counts || {});
  if (!entries.length) return h('span', { class: 'muted' }, 'none');
  return entries.map(([status, n]) => h('span', { class: 'pill' }, statusBadge(status), ` ${n}`));
}

function sourceRow(source) {
  return h('tr', { 'data-source': source.id },
    h('td', {}, h('a', { href: `/source/${encodeURIComponent(source.id)}` }, source.id)),
    h('td', { class: 'num' }, fmtNumber(source.ra, 5)),
    h('td', { class: 'num' }, fmtNumber(source.dec, 5)),
    h('td', { class: 'num' }, fmtNumber(source.redshift, 4)),
    h('td', { class: 'hide-narrow small' }, source.summary_preview || h('span', { class: 'muted' }, '—')),
    h('td', {}, countsCell(source.analyses_by_status)));
}

export async function render(main, profile) {
  const params = new URLSearchParams(location.search);
  const state = { q: params.get('q') || '', page: Number(params.get('page') || 1), filters: {} };
  for (const [name] of FILTERS) if (params.get(name)) state.filters[name] = params.get(name);
  const search = h('input', { type: 'search', id: 'search', placeholder: 'Search by id', value: state.q });
  const body = h('tbody');
  const pager = h('div', { class: 'pager' });
  const status = h('div');

  async function load() {
    const query = new URLSearchParams({ pageNumber: state.page, numPerPage: PAGE_SIZE });
    if (state.q) query.set('q', state.q);
    const filters = Object.entries(state.filters).filter(([, v]) => v);
    for (const [name, value] of filters) query.set(name, value);
    history.replaceState(null, '', `/?${new URLSearchParams([['q', state.q], ['page', state.page], ...filters])}`);
    body.removeAttribute('data-loaded');
    try {
      const data = await api('GET', `/api/sources_overview?${query}`);
      clear(status);
      clear(body, data.sources.map(sourceRow));
      body.setAttribute('data-loaded', query.toString());
      if (!data.sources.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No sources match.')));
      const pages = Math.max(1, Math.ceil(data.totalMatches / PAGE_SIZE));
      clear(pager,
        h('button', { type: 'button', disabled: state.page <= 1, onclick: () => { state.page -= 1; load(); } }, '← Previous'),
        h('span', { class: 'muted', id: 'page-info' }, `Page ${state.page} of ${pages} · ${data.totalMatches} sources`),
        h('button', { type: 'button', disabled: state.page >= pages, onclick: () => { state.page += 1; load(); } }, 'Next →'));
    } catch (error) {
      clear(status, errorBox(error));
    }
  }

  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.q = search.value.trim(); state.page = 1; load(); }, 250);
  });
  clear(main,
    h('div', { class: 'row' }, h('h1', {}, 'Sources'), h('span', { class: 'spacer' }), search),
    h('details', { id: 'filters-box', open: Object.keys(state.filters).length > 0 },
      h('summary', {}, 'Filter by photometry'),
      filterForm(state.filters, (filters) => { state.filters = filters; state.page = 1; load(); })),
    status,
    h('div', { class: 'card table-wrap' },
      h('table', { id: 'sources' },
        h('thead', {}, h('tr', {},
          h('th', {}, 'Id'), h('th', { class: 'num' }, 'RA'), h('th', { class: 'num' }, 'Dec'),
          h('th', { class: 'num' }, 'z'), h('th', { class: 'hide-narrow' }, 'Latest summary'),
          h('th', {}, 'Analyses'))),
        body),
      pager));
  await load();
}
