// Analysis services: the list; managers create, edit and delete them (every field; secrets are
// write-only and shown only as set / not set); an upload form for upload-only services; each
// service's default analyses.
import { defaultsPanel } from './defaults.js';
import { api, can, clear, confirmDialog, errorBox, h } from './lib.js';

const ANALYSIS_TYPES = ['lightcurve_fitting', 'spectrum_fitting', 'meta_analysis'];
const INPUT_TYPES = ['photometry', 'spectra', 'redshift', 'annotations', 'comments', 'classifications'];
const AUTH_TYPES = ['none', 'header_token', 'api_key', 'HTTPBasicAuth', 'HTTPDigestAuth', 'OAuth1'];
const FLAGS = [
  ['enabled', 'enabled', true], ['upload_only', 'upload only', false],
  ['is_summary', 'summary service', false], ['display_on_resource_dropdown', 'show in menus', true],
];

function field(label, input, help) {
  return h('label', { class: 'field' }, h('span', {}, label), input, help ? h('div', { class: 'help' }, help) : null);
}

function serviceForm(service, groups, onSaved) {
  const s = service || {};
  const text = (name, value, attrs = {}) => h('input', { name, value: value ?? '', ...attrs });
  const params = s.optional_analysis_parameters;
  const error = h('div');
  const form = h('form', { id: 'service-form' },
    h('h2', {}, service ? `Edit ${s.display_name || s.name}` : 'New analysis service'),
    h('div', { class: 'fields' },
      field('Name *', text('name', s.name, { required: true })),
      field('Display name', text('display_name', s.display_name)),
      field('URL *', text('url', s.url, { required: !s.upload_only, type: 'url' })),
      field('Version', text('version', s.version)),
      field('Contact name', text('contact_name', s.contact_name)),
      field('Contact email', text('contact_email', s.contact_email, { type: 'email' })),
      field('Analysis type', h('select', { name: 'analysis_type' }, ANALYSIS_TYPES.map((t) => h('option', { value: t, selected: t === s.analysis_type }, t)))),
      field('Inputs format', h('select', { name: 'inputs_format' }, ['csv', 'json'].map((t) => h('option', { value: t, selected: t === s.inputs_format }, t)))),
      field('Timeout (s)', text('timeout', s.timeout ?? 3600, { type: 'number', min: '1', step: 'any' }))),
    field('Description', h('textarea', { name: 'description', rows: 2, style: 'min-height:3rem' }, s.description || '')),
    h('div', { class: 'field' }, h('span', {}, 'Input data'), h('div', { class: 'row' },
      INPUT_TYPES.map((t) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'input_data_types', value: t, checked: (s.input_data_types || []).includes(t) }), t)))),
    h('div', { class: 'field' }, h('span', {}, 'Flags'), h('div', { class: 'row' },
      FLAGS.map(([name, label, byDefault]) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name, checked: service ? !!s[name] : byDefault }), label)))),
    field('Optional analysis parameters (JSON)', h('textarea', { name: 'optional_analysis_parameters', rows: 4, class: 'mono' },
      params ? (typeof params === 'string' ? params : JSON.stringify(params, null, 2)) : ''),
    'Each name maps to a list of allowed values or to {"type", "required", "description", "default"}.'),
    h('div', { class: 'fields' },
      field('Authentication', h('select', { name: 'authentication_type' }, AUTH_TYPES.map((t) => h('option', { value: t, selected: t === (s.authentication_type || 'none') }, t)))),
      field(`Credentials (_authinfo JSON) · ${s.has_authinfo ? 'set' : 'not set'}`,
        h('input', { name: '_authinfo', type: 'password', autocomplete: 'off', placeholder: s.has_authinfo ? 'leave empty to keep' : '{"header_token": "…"}' }),
        'Write-only: never shown again.'),
      field(`Signing secret · ${s.has_signing_secret ? 'set' : 'not set'}`,
        h('input', { name: 'signing_secret', type: 'password', autocomplete: 'off', placeholder: s.has_signing_secret ? 'leave empty to keep' : '' }),
        'Write-only: never shown again.')),
    h('div', { class: 'field' }, h('span', {}, 'Groups'), h('div', { class: 'row' },
      groups.map((g) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'group_ids', value: g.id, checked: service ? (s.groups || []).some((x) => x.id === g.id) : true }), g.name)))),
    error,
    h('div', { class: 'row' }, h('span', { class: 'spacer' }),
      h('button', { type: 'button', onclick: () => form.closest('dialog').close() }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary' }, 'Save')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {};
    for (const name of ['name', 'display_name', 'url', 'version', 'contact_name', 'contact_email', 'analysis_type', 'inputs_format', 'description', 'authentication_type']) {
      const value = String(data.get(name) || '').trim();
      if (value || service) body[name] = value || null;
    }
    if (!body.url && service) delete body.url;
    body.timeout = Number(data.get('timeout'));
    body.input_data_types = data.getAll('input_data_types');
    for (const [name] of FLAGS) body[name] = data.get(name) === 'on';
    body.group_ids = data.getAll('group_ids').map(Number);
    const params = String(data.get('optional_analysis_parameters') || '').trim();
    body.optional_analysis_parameters = params || '{}';
    const authinfo = String(data.get('_authinfo') || '').trim();
    if (authinfo) body._authinfo = authinfo;
    const secret = String(data.get('signing_secret') || '');
    if (secret) body.signing_secret = secret;
    if (service) {
      // Only what changed: the API validates the merged result.
      const same = (a, b) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
      const current = { ...service, group_ids: (service.groups || []).map((g) => g.id) };
      for (const [name, value] of Object.entries(body)) {
        if (name === '_authinfo' || name === 'signing_secret') continue;
        const before = name === 'optional_analysis_parameters' ? normalParams(current[name]) : current[name];
        const after = name === 'optional_analysis_parameters' ? normalParams(value) : value;
        if (same(before, after)) delete body[name];
      }
    }
    try {
      if (service) await api('PATCH', `/api/analysis_service/${service.id}`, body);
      else await api('POST', '/api/analysis_service', body);
      form.closest('dialog').close();
      onSaved();
    } catch (failure) {
      clear(error, errorBox(failure));
    }
  });
  return form;
}

function normalParams(value) {
  if (!value) return {};
  if (typeof value !== 'string') return value;
  try { return JSON.parse(value); } catch { return value; }
}

function openDialog(content) {
  const dialog = h('dialog', { class: 'wide' }, content);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

function uploadForm(service) {
  const error = h('div');
  const form = h('form', { id: 'upload-form' },
    h('h2', {}, `Upload results to ${service.display_name || service.name}`),
    field('Source id *', h('input', { name: 'obj_id', required: true })),
    field('Message', h('input', { name: 'message' })),
    field('Results (a JSON file with the analysis object: results, plots, …)', h('input', { name: 'file', type: 'file', accept: '.json,application/json', required: true })),
    error,
    h('div', { class: 'row' }, h('span', { class: 'spacer' }),
      h('button', { type: 'button', onclick: () => form.closest('dialog').close() }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary' }, 'Upload')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      let analysis;
      try { analysis = JSON.parse(await form.file.files[0].text()); } catch { throw new Error('The file is not valid JSON'); }
      const objId = form.obj_id.value.trim();
      await api('POST', `/api/obj/${encodeURIComponent(objId)}/analysis_upload/${service.id}`, { message: form.message.value, analysis });
      form.closest('dialog').close();
      location.assign(`/source/${encodeURIComponent(objId)}`);
    } catch (failure) {
      clear(error, errorBox(failure));
    }
  });
  return form;
}

function flags(s) {
  return FLAGS.filter(([name]) => s[name] && name !== 'display_on_resource_dropdown').map(([, label]) => h('span', { class: 'pill' }, label))
    .concat(s.enabled ? [] : [h('span', { class: 'pill' }, 'disabled')]);
}

export async function render(main, profile) {
  const manager = can(profile, 'Manage Analysis Services');
  const runner = can(profile, 'Run Analyses');
  const groups = (await api('GET', '/api/groups')).user_groups;
  const body = h('tbody');
  const error = h('div');

  async function load() {
    const services = await api('GET', '/api/analysis_service');
    clear(body, services.flatMap((s) => [h('tr', { 'data-service': s.id },
      h('td', {}, h('strong', {}, s.display_name || s.name), h('div', { class: 'small muted mono' }, s.name)),
      h('td', { class: 'hide-narrow small' }, s.analysis_type, h('div', { class: 'muted' }, (s.input_data_types || []).join(', '))),
      h('td', {}, flags(s)),
      h('td', { class: 'hide-narrow small' }, s.authentication_type,
        h('div', { class: 'muted secret-state' }, `credentials ${s.has_authinfo ? 'set' : 'not set'} · signing ${s.has_signing_secret ? 'set' : 'not set'}`)),
      h('td', { class: 'actions' },
        s.upload_only && runner ? h('button', { type: 'button', class: 'link upload', onclick: () => openDialog(uploadForm(s)) }, 'Upload') : null,
        manager ? h('button', { type: 'button', class: 'link edit', onclick: () => openDialog(serviceForm(s, groups, load)) }, 'Edit') : null,
        manager ? h('button', {
          type: 'button', class: 'link danger delete',
          onclick: async () => {
            if (!await confirmDialog(`Delete the service ${s.display_name || s.name} and all its analyses? This cannot be undone.`)) return;
            try { await api('DELETE', `/api/analysis_service/${s.id}`); await load(); } catch (failure) { clear(error, errorBox(failure)); }
          },
        }, 'Delete') : null)),
    h('tr', { class: 'defaults-row' }, h('td', { colspan: 5 }, defaultsPanel(s, { manager, groups })))]));
    if (!services.length) body.append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No services you can see.')));
  }

  clear(main,
    h('div', { class: 'row' }, h('h1', {}, 'Analysis services'), h('span', { class: 'spacer' }),
      manager ? h('button', { type: 'button', class: 'primary', id: 'new-service', onclick: () => openDialog(serviceForm(null, groups, load)) }, 'New service') : null),
    error,
    h('div', { class: 'card table-wrap' }, h('table', { id: 'services' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Service'), h('th', { class: 'hide-narrow' }, 'Type'), h('th', {}, 'Flags'), h('th', { class: 'hide-narrow' }, 'Authentication'), h('th', {}, ''))),
      body)));
  await load();
  main.setAttribute('data-ready', 'true');
}
