// Health: analyses across sources, counted by status over a window, filtered by service and
// status, with the newest failures first.
import { api, clear, errorBox, h, statusBadge, timeEl } from './lib.js';

const WINDOWS = [['1h', '1 hour'], ['24h', '24 hours'], ['7d', '7 days'], ['30d', '30 days']];
const STATUSES = ['queued', 'dispatching', 'pending', 'completed', 'failure', 'timed_out', 'cancelled'];

export async function render(main) {
  const params = new URLSearchParams(location.search);
  const state = { window: params.get('window') || '24h', service: params.get('service') || '', status: params.get('status') || '' };
  const services = await api('GET', '/api/analysis_service');
  const tiles = h('div', { class: 'tiles', id: 'counts' });
  const failures = h('tbody');
  const error = h('div');
  const windowButtons = h('span', { class: 'seg', id: 'windows' });
  const serviceSelect = h('select', { id: 'service-filter' }, h('option', { value: '' }, 'All services'),
    services.map((s) => h('option', { value: s.id, selected: String(s.id) === state.service }, s.display_name || s.name)));
  const statusSelect = h('select', { id: 'status-filter' }, h('option', { value: '' }, 'All statuses'),
    STATUSES.map((s) => h('option', { value: s, selected: s === state.status }, s)));

  async function load() {
    const query = new URLSearchParams({ window: state.window });
    if (state.service) query.set('analysisServiceID', state.service);
    if (state.status) query.set('status', state.status);
    history.replaceState(null, '', `/health?${new URLSearchParams(state)}`);
    clear(windowButtons, WINDOWS.map(([value, label]) => h('button', {
      type: 'button', 'data-window': value, class: value === state.window ? 'primary' : '',
      onclick: () => { state.window = value; load(); },
    }, label)));
    try {
      const data = await api('GET', `/api/analysis_health?${query}`);
      clear(error);
      const total = Object.values(data.counts).reduce((a, b) => a + b, 0);
      clear(tiles,
        h('div', { class: 'tile' }, h('div', { class: 'count', 'data-count': 'total' }, total), h('div', { class: 'muted small' }, 'all')),
        STATUSES.filter((s) => data.counts[s] || !state.status).map((s) => h('div', { class: 'tile' },
          h('div', { class: 'count', 'data-count': s }, data.counts[s] || 0), statusBadge(s))));
      clear(failures, data.failures.map((f) => h('tr', { 'data-analysis': f.id },
        h('td', {}, h('a', { href: `/analysis/${f.id}` }, `#${f.id}`)),
        h('td', {}, h('a', { href: `/source/${encodeURIComponent(f.obj_id)}` }, f.obj_id)),
        h('td', { class: 'hide-narrow' }, f.analysis_service_name),
        h('td', {}, statusBadge(f.status), ' ', h('span', { class: 'small muted' }, timeEl(f.last_activity))),
        h('td', { class: 'small' }, f.status_message || ''))));
      if (!data.failures.length) failures.append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No failures in this window.')));
      main.setAttribute('data-ready', state.window);
    } catch (failure) {
      clear(error, errorBox(failure));
    }
  }

  serviceSelect.addEventListener('change', () => { state.service = serviceSelect.value; load(); });
  statusSelect.addEventListener('change', () => { state.status = statusSelect.value; load(); });
  clear(main,
    h('h1', {}, 'Analysis health'),
    h('div', { class: 'row', style: 'margin-bottom:.8rem' }, windowButtons, h('span', { class: 'spacer' }), serviceSelect, statusSelect),
    error, tiles,
    h('section', { class: 'card table-wrap' }, h('h2', {}, 'Newest failures'),
      h('table', { id: 'failures' }, h('thead', {}, h('tr', {}, h('th', {}, 'Analysis'), h('th', {}, 'Source'),
        h('th', { class: 'hide-narrow' }, 'Service'), h('th', {}, 'Status'), h('th', {}, 'Message'))), failures)));
  await load();
}
