// The source's summary: the latest (Markdown rendered safely), its history, an edit dialog and
// "run summary" with the caller's summary services.
import { api, can, clear, errorBox, h, markdown, timeEl } from './lib.js';

function historyList(entries) {
  if (!entries.length) return h('p', { class: 'muted small' }, 'No summary yet.');
  return h('ul', { class: 'history', id: 'summary-history' }, entries.map((e) => h('li', {},
    h('div', { class: 'small muted' },
      e.is_bot ? 'bot' : (e.set_by_username || `user #${e.set_by_user_id ?? '?'}`), ' · ', timeEl(e.set_at_utc),
      e.analysis_id ? [' · ', h('a', { href: `/analysis/${e.analysis_id}` }, `analysis #${e.analysis_id}`)] : null,
      e.origin ? ` · ${e.origin}` : null),
    e.summary == null
      ? h('div', { class: 'small muted' }, '(cleared)')
      : h('div', { class: 'small' }, e.summary.length > 160 ? `${e.summary.slice(0, 160)}…` : e.summary))));
}

function editDialog(source, onSaved) {
  const text = h('textarea', { name: 'summary', id: 'summary-text' }, source.summary || '');
  const error = h('div');
  const save = async (summary) => {
    try {
      await api('PATCH', `/api/sources/${encodeURIComponent(source.id)}`, { summary });
      dialog.close();
      onSaved();
    } catch (failure) { clear(error, errorBox(failure)); }
  };
  const dialog = h('dialog', { id: 'summary-dialog' },
    h('form', { method: 'dialog' },
      h('h2', {}, 'Edit the summary'),
      h('p', { class: 'muted small' }, 'Markdown. The previous summary stays in the history.'),
      text, error,
      h('div', { class: 'row' },
        source.summary ? h('button', { type: 'button', id: 'summary-clear', onclick: () => save(null) }, 'Clear') : null,
        h('span', { class: 'spacer' }),
        h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel'),
        h('button', { type: 'button', class: 'primary', id: 'summary-save', onclick: () => save(text.value) }, 'Save'))));
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

async function runSummary(source, service, status) {
  try {
    const started = await api('POST', `/api/obj/${encodeURIComponent(source.id)}/analysis/${service.id}`, {});
    clear(status, h('div', { class: 'notice' }, 'Summary analysis ', h('a', { href: `/analysis/${started.id}` }, `#${started.id}`), ' started; the summary appears here when it completes.'));
  } catch (error) { clear(status, errorBox(error)); }
}

export function summaryCard({ source, profile, services }) {
  const card = h('section', { class: 'card', id: 'summary' });
  const status = h('div');
  const summaryServices = services.filter((s) => s.is_summary && s.enabled !== false && !s.upload_only);
  const keyNote = h('div');

  async function reload() {
    const fresh = await api('GET', `/api/sources/${encodeURIComponent(source.id)}`);
    Object.assign(source, fresh);
    draw();
  }

  function draw() {
    const actions = [];
    if (can(profile, 'Upload Data')) {
      actions.push(h('button', { type: 'button', id: 'summary-edit', onclick: () => editDialog(source, reload) }, 'Edit'));
    }
    if (can(profile, 'Run Analyses')) {
      for (const service of summaryServices) {
        actions.push(h('button', { type: 'button', class: 'run-summary', onclick: () => runSummary(source, service, status) }, `Run ${service.display_name || service.name}`));
      }
    }
    clear(card,
      h('div', { class: 'row' }, h('h2', {}, 'Summary'), h('span', { class: 'spacer' }), actions),
      source.summary ? h('div', { id: 'summary-latest' }, markdown(source.summary)) : h('p', { class: 'muted', id: 'summary-latest' }, 'No summary.'),
      keyNote, status,
      h('details', {}, h('summary', {}, `History (${(source.summary_history || []).length})`), historyList(source.summary_history || [])));
  }

  draw();
  if (summaryServices.length && can(profile, 'Run Analyses')) {
    api('GET', '/api/internal/profile/llm_key').then((state) => {
      const stored = state && state.llm_key_set;
      clear(keyNote, h('p', { class: 'muted small', id: 'llm-key-state' }, stored
        ? 'Summaries use your own stored LLM API key.'
        : 'You have no LLM API key stored: summaries use the server\'s key if one is configured (otherwise the analysis fails with a message saying how to set one: PUT /api/internal/profile/llm_key).'));
    }).catch(() => {});
  }
  return card;
}
