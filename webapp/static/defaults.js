// A service's default analyses on the services page: their source filter, parameters, daily
// limit, today's count and last run; managers create, edit and delete them.
import { api, clear, confirmDialog, errorBox, h, timeEl } from './lib.js';

const FLAGS = [['show_parameters', 'show parameters'], ['show_plots', 'show plots'], ['show_corner', 'show corner']];
const FILTER_HELP = '{"classifications": [{"name": "Ia", "probability": 0.9}]}, {"group_id": 3} '
  + 'and/or {"on_new_photometry": true}';

function field(label, input, help) {
  return h('label', { class: 'field' }, h('span', {}, label), input, help ? h('div', { class: 'help' }, help) : null);
}

// The source filter in words: "classification Ia (p ≥ 0.9)", "saved to group 3", …
function filterText(filter, groupNames) {
  const parts = (filter.classifications || []).map((c) => `classification ${c.name} (p ≥ ${c.probability})`);
  if (filter.group_id !== undefined) parts.push(`saved to ${groupNames.get(filter.group_id) || `group ${filter.group_id}`}`);
  if (filter.on_new_photometry) parts.push('new photometry');
  return parts.join(' · ') || JSON.stringify(filter);
}

function parseJson(text, name) {
  if (!text.trim()) return {};
  try { return JSON.parse(text); } catch { throw new Error(`${name} is not valid JSON`); }
}

function defaultForm(service, existing, groups, onSaved) {
  const d = existing || { default_analysis_parameters: {}, source_filter: {}, daily_limit: 10, groups: [] };
  const error = h('div');
  const json = (value) => JSON.stringify(value || {}, null, 2);
  const form = h('form', { id: 'default-form' },
    h('h2', {}, existing ? `Edit default analysis #${d.id}` : `New default analysis for ${service.display_name || service.name}`),
    field('Source filter (JSON) *', h('textarea', { name: 'source_filter', rows: 3, class: 'mono', required: true }, json(d.source_filter)), FILTER_HELP),
    field('Parameters (JSON)', h('textarea', { name: 'default_analysis_parameters', rows: 3, class: 'mono' }, json(d.default_analysis_parameters)),
      'Checked like the start form\'s parameters against the service\'s optional parameters.'),
    field('Daily limit (1–1000)', h('input', { name: 'daily_limit', type: 'number', min: 1, max: 1000, step: 1, value: d.daily_limit, required: true }),
      'Analyses started since 00:00 UTC.'),
    h('div', { class: 'field' }, h('span', {}, 'Share results with'), h('div', { class: 'row' },
      groups.map((g) => h('label', { class: 'check' }, h('input', {
        type: 'checkbox', name: 'group_ids', value: g.id, checked: existing ? d.groups.some((x) => x.id === g.id) : false,
      }), g.name)))),
    h('div', { class: 'field' }, h('span', {}, 'Flags'), h('div', { class: 'row' },
      FLAGS.map(([name, label]) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name, checked: existing ? !!d[name] : true }), label)))),
    error,
    h('div', { class: 'row' }, h('span', { class: 'spacer' }),
      h('button', { type: 'button', onclick: () => form.closest('dialog').close() }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary' }, 'Save')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const body = {
        source_filter: parseJson(String(data.get('source_filter')), 'The source filter'),
        default_analysis_parameters: parseJson(String(data.get('default_analysis_parameters')), 'The parameters'),
        daily_limit: Number(data.get('daily_limit')),
        group_ids: data.getAll('group_ids').map(Number),
        ...Object.fromEntries(FLAGS.map(([name]) => [name, data.get(name) === 'on'])),
      };
      const base = `/api/analysis_service/${service.id}/default_analysis`;
      if (existing) await api('PATCH', `${base}/${d.id}`, body);
      else await api('POST', base, body);
      form.closest('dialog').close();
      onSaved();
    } catch (failure) {
      clear(error, errorBox(failure));
    }
  });
  return form;
}

function openDialog(content) {
  const dialog = h('dialog', { class: 'wide' }, content);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// The defaults of one service, reloading itself after every change.
export function defaultsPanel(service, { manager, groups }) {
  const panel = h('div', { class: 'defaults', 'data-defaults-of': service.id });
  const groupNames = new Map(groups.map((g) => [g.id, g.name]));
  const base = `/api/analysis_service/${service.id}/default_analysis`;

  function row(d) {
    const stats = d.stats || {};
    return h('li', { 'data-default': d.id },
      h('div', { class: 'row' },
        h('strong', {}, `#${d.id}`), h('span', { class: 'source-filter' }, filterText(d.source_filter || {}, groupNames)),
        h('span', { class: 'spacer' }),
        manager ? h('button', { type: 'button', class: 'link edit-default', onclick: () => openDialog(defaultForm(service, d, groups, load)) }, 'Edit') : null,
        manager ? h('button', {
          type: 'button', class: 'link danger delete-default',
          onclick: async () => {
            if (!await confirmDialog(`Delete default analysis #${d.id} of ${service.display_name || service.name}? Sources will no longer start it.`)) return;
            try { await api('DELETE', `${base}/${d.id}`); await load(); } catch (failure) { panel.append(errorBox(failure)); }
          },
        }, 'Delete') : null),
      h('div', { class: 'small muted' },
        h('span', { class: 'daily' }, `today ${stats.daily_count ?? 0} of ${d.daily_limit}`), ' · last run ',
        stats.last_run ? timeEl(stats.last_run) : 'never', ' · by ', d.author ? d.author.username : '—',
        d.groups.length ? [' · shared with ', d.groups.map((g) => g.name).join(', ')] : ''),
      Object.keys(d.default_analysis_parameters || {}).length
        ? h('div', { class: 'mono small parameters' }, JSON.stringify(d.default_analysis_parameters)) : null);
  }

  async function load() {
    try {
      const defaults = await api('GET', base);
      clear(panel,
        h('div', { class: 'row' }, h('span', { class: 'small muted' }, `Default analyses (${defaults.length})`),
          manager ? h('button', { type: 'button', class: 'link new-default', onclick: () => openDialog(defaultForm(service, null, groups, load)) }, '+ Add default') : null),
        defaults.length ? h('ul', { class: 'history' }, defaults.map(row)) : null);
      panel.setAttribute('data-loaded', String(defaults.length));
    } catch (failure) {
      clear(panel, errorBox(failure));
    }
  }

  load();
  return panel;
}
