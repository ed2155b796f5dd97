// The analyses of a source: the live table (Server-Sent Events), cancel, delete, start form.
import {
  ACTIVE, api, can, clear, confirmDialog, errorBox, fmtDuration, h, statusBadge, timeEl,
} from './lib.js';

const TRUE_FALSE = new Set(['true', 'false']);

export function parameterSpecs(service) {
  const raw = service.optional_analysis_parameters;
  if (!raw) return {};
  if (typeof raw === 'object') return raw;
  try { return JSON.parse(raw); } catch { return {}; }
}

function paramText(params) {
  const entries = Object.entries(params || {});
  if (!entries.length) return h('span', { class: 'muted' }, 'defaults');
  return entries.map(([k, v]) => {
    const shown = typeof v === 'string' && v.startsWith('data:') ? '(file)' : JSON.stringify(v);
    return h('span', { class: 'pill mono' }, `${k}=${shown}`);
  });
}

function mayChange(profile, analysis) {
  return can(profile, 'Run Analyses') && (profile.is_admin || analysis.author_id === profile.id);
}

// One field of the start form, from one optional_analysis_parameters entry.
function parameterField(name, spec) {
  if (Array.isArray(spec)) {
    const lower = spec.map((v) => String(v).toLowerCase());
    if (spec.length === 2 && lower.every((v) => TRUE_FALSE.has(v))) {
      const input = h('input', { type: 'checkbox', name, checked: lower[0] === 'true' });
      const value = () => spec[lower.indexOf(input.checked ? 'true' : 'false')];
      return { element: h('label', { class: 'field check' }, input, name), value };
    }
    const select = h('select', { name }, spec.map((v) => h('option', { value: String(v) }, String(v))));
    return { element: h('label', { class: 'field' }, h('span', {}, name), select), value: () => spec[select.selectedIndex] };
  }
  const type = spec.type || 'string';
  const title = `${name}${spec.required ? ' *' : ''}`;
  const help = spec.description ? h('div', { class: 'help' }, spec.description) : null;
  if (type === 'boolean') {
    const input = h('input', { type: 'checkbox', name, checked: spec.default === true || String(spec.default).toLowerCase() === 'true' });
    return { element: h('div', { class: 'field' }, h('label', { class: 'check' }, input, title), help), value: () => input.checked };
  }
  if (type === 'file') {
    const input = h('input', { type: 'file', name, required: !!spec.required });
    const value = () => new Promise((resolve, reject) => {
      const file = input.files[0];
      if (!file) { resolve(undefined); return; }
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).replace(';base64,', `;name=${encodeURIComponent(file.name)};base64,`));
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
    return { element: h('label', { class: 'field' }, h('span', {}, title), input, help), value };
  }
  const numeric = type === 'number' || type === 'integer';
  const input = h('input', {
    type: numeric ? 'number' : 'text', name, required: !!spec.required,
    step: type === 'integer' ? '1' : 'any', value: spec.default ?? '',
  });
  const value = () => {
    if (input.value === '') return undefined;
    return numeric ? Number(input.value) : input.value;
  };
  return { element: h('label', { class: 'field' }, h('span', {}, title), input, help), value };
}

function checkboxes(name, options, checked) {
  return options.map(([value, label]) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name, value: String(value), checked: checked(value) }), label));
}

function picked(form, name) {
  return [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);
}

// The start form for one service.
function startForm(ctx, service, onStarted) {
  const specs = parameterSpecs(service);
  const fields = Object.entries(specs).map(([name, spec]) => [name, parameterField(name, spec)]);
  const error = h('div');
  const takesPhotometry = (service.input_data_types || []).includes('photometry');
  const filters = [...new Set(ctx.photometry.map((p) => p.filter))].sort();
  const instruments = [...new Map(ctx.photometry.map((p) => [p.instrument_id, p.instrument_name]))];
  const sourceGroups = new Set(ctx.source.groups.map((g) => g.id));
  const form = h('form', { id: 'start-form', class: 'card' },
    h('h3', {}, `Start ${service.display_name || service.name}`),
    service.description ? h('p', { class: 'muted small' }, service.description) : null,
    fields.length ? h('div', { class: 'fields' }, fields.map(([, f]) => f.element)) : h('p', { class: 'muted small' }, 'This service takes no parameters.'),
    takesPhotometry && filters.length ? h('div', { class: 'field' }, h('span', {}, 'Photometry filters (none ticked: all)'),
      h('div', { class: 'row' }, checkboxes('filter', filters.map((f) => [f, f]), () => false))) : null,
    takesPhotometry && instruments.length ? h('div', { class: 'field' }, h('span', {}, 'Instruments (none ticked: all)'),
      h('div', { class: 'row' }, checkboxes('instrument', instruments, () => false))) : null,
    h('div', { class: 'field' }, h('span', {}, 'Share with groups'),
      h('div', { class: 'row' }, checkboxes('group', ctx.groups.map((g) => [g.id, g.name]), (id) => sourceGroups.has(id)))),
    h('div', { class: 'row field' },
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'show_plots', checked: true }), 'show plots'),
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'show_corner', checked: true }), 'show corner plot'),
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'show_parameters', checked: true }), 'show parameters')),
    error,
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Start analysis')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const parameters = {};
      for (const [name, field] of fields) {
        const value = await field.value();
        if (value !== undefined) parameters[name] = value;
      }
      const body = {
        analysis_parameters: parameters,
        group_ids: picked(form, 'group').map(Number),
        show_plots: form.show_plots.checked,
        show_corner: form.show_corner.checked,
        show_parameters: form.show_parameters.checked,
      };
      const photometry = {};
      const chosenFilters = picked(form, 'filter');
      const chosenInstruments = picked(form, 'instrument').map(Number);
      if (chosenFilters.length) photometry.filters = chosenFilters;
      if (chosenInstruments.length) photometry.instruments = chosenInstruments;
      if (Object.keys(photometry).length) body.input_filters = { photometry };
      const started = await api('POST', `/api/obj/${encodeURIComponent(ctx.source.id)}/analysis/${service.id}`, body);
      clear(error);
      onStarted(started.id);
    } catch (failure) {
      clear(error, errorBox(failure));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export class AnalysesPanel {
  constructor(ctx) {
    this.ctx = ctx; // {source, profile, services, groups, photometry, onCompleted}
    this.rows = new Map();
    this.body = h('tbody');
    this.error = h('div');
    this.element = h('section', { class: 'card', id: 'analyses' });
  }

  async load(pending = null) {
    const id = encodeURIComponent(this.ctx.source.id);
    const analyses = await (pending || api('GET', `/api/obj/${id}/analysis`));
    this.analyses = analyses.sort((a, b) => b.id - a.id);
    clear(this.body, this.analyses.map((a) => this.row(a)));
    if (!this.analyses.length) this.body.append(h('tr', { class: 'empty' }, h('td', { colspan: 7, class: 'muted' }, 'No analyses yet.')));
  }

  row(analysis) {
    const actions = h('td', { class: 'actions' });
    const tr = h('tr', { 'data-analysis': analysis.id },
      h('td', {}, h('a', { href: `/analysis/${analysis.id}` }, `#${analysis.id}`)),
      h('td', {}, analysis.analysis_service_name),
      h('td', { class: 'status' }),
      h('td', { class: 'duration num hide-narrow' }),
      h('td', { class: 'message small' }),
      h('td', { class: 'hide-narrow' }, analysis.show_parameters === false ? h('span', { class: 'muted' }, 'hidden') : paramText(analysis.analysis_parameters)),
      actions);
    this.rows.set(analysis.id, { tr, analysis });
    this.update(analysis);
    return tr;
  }

  // Applies a status change (from the list or from a live event) to its row.
  update(change) {
    const entry = this.rows.get(change.id);
    if (!entry) return false;
    Object.assign(entry.analysis, change);
    const { tr, analysis } = entry;
    clear(tr.querySelector('.status'), statusBadge(analysis.status), ' ', h('span', { class: 'muted small' }, timeEl(analysis.last_activity)));
    clear(tr.querySelector('.duration'), fmtDuration(analysis.duration));
    clear(tr.querySelector('.message'), analysis.status_message || '');
    const actions = tr.querySelector('.actions');
    clear(actions);
    if (mayChange(this.ctx.profile, analysis)) {
      if (ACTIVE.has(analysis.status)) {
        actions.append(h('button', { type: 'button', class: 'link cancel', onclick: () => this.cancel(analysis) }, 'Cancel'));
      }
      actions.append(h('button', { type: 'button', class: 'link danger delete', onclick: () => this.remove(analysis) }, 'Delete'));
    }
    return true;
  }

  async cancel(analysis) {
    try {
      const done = await api('POST', `/api/obj/analysis/${analysis.id}/cancel`);
      this.update({ id: analysis.id, ...(done && done.status ? done : { status: 'cancelled' }) });
    } catch (error) { clear(this.error, errorBox(error)); }
  }

  async remove(analysis) {
    const ok = await confirmDialog(`Delete analysis #${analysis.id} (${analysis.analysis_service_name}) and all its results? This cannot be undone.`);
    if (!ok) return;
    try {
      await api('DELETE', `/api/obj/analysis/${analysis.id}`);
      this.rows.get(analysis.id)?.tr.remove();
      this.rows.delete(analysis.id);
      this.ctx.onCompleted();
    } catch (error) { clear(this.error, errorBox(error)); }
  }

  // Live status: the gateway pushes a change as soon as the bus tells it about one.
  listen() {
    const url = `/api/live/analyses?objID=${encodeURIComponent(this.ctx.source.id)}`;
    this.events = new EventSource(url);
    this.events.addEventListener('ready', () => this.element.setAttribute('data-live', 'on'));
    this.events.addEventListener('analysis', async (event) => {
      const change = JSON.parse(event.data);
      const known = this.update(change);
      if (!known) await this.load();
      if (change.status === 'completed') this.ctx.onCompleted();
    });
    window.addEventListener('pagehide', () => this.events.close());
  }

  render() {
    const { profile, services } = this.ctx;
    const startable = services.filter((s) => s.enabled !== false && !s.upload_only && !s.is_summary);
    const formSlot = h('div');
    const choose = h('select', { id: 'start-service' },
      h('option', { value: '' }, 'Start an analysis…'),
      startable.map((s) => h('option', { value: s.id }, s.display_name || s.name)));
    choose.addEventListener('change', () => {
      const service = startable.find((s) => String(s.id) === choose.value);
      clear(formSlot, service ? startForm(this.ctx, service, async () => {
        choose.value = '';
        clear(formSlot);
        await this.load();
      }) : null);
    });
    const writable = can(profile, 'Run Analyses') && startable.length > 0;
    clear(this.element,
      h('div', { class: 'row' }, h('h2', {}, 'Analyses'), h('span', { class: 'spacer' }), writable ? choose : null),
      formSlot,
      this.error,
      h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Id'), h('th', {}, 'Service'), h('th', {}, 'Status'),
          h('th', { class: 'num hide-narrow' }, 'Duration'), h('th', {}, 'Message'),
          h('th', { class: 'hide-narrow' }, 'Parameters'), h('th', {}, ''))),
        this.body)));
    return this.element;
  }
}
