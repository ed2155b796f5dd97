// Summary search: sources whose summaries are nearest in meaning to a text (POST /api/summary_query).
import { api, clear, errorBox, fmtNumber, h, markdown } from './lib.js';

export async function render(main) {
  const results = h('div', { id: 'summary-results' });
  const form = h('form', { id: 'summary-search', class: 'card' },
    h('div', { class: 'fields' },
      h('label', { class: 'field', style: 'grid-column: 1 / -1' }, h('span', {}, 'Describe what you are looking for'),
        h('input', { name: 'q', required: true, placeholder: 'e.g. helium-rich transient in a dwarf host', style: 'width:100%' })),
      h('label', { class: 'field' }, h('span', {}, 'How many'), h('input', { name: 'k', type: 'number', min: 1, max: 100, value: 10 })),
      h('label', { class: 'field' }, h('span', {}, 'Redshift from'), h('input', { name: 'z_min', type: 'number', step: 'any' })),
      h('label', { class: 'field' }, h('span', {}, 'Redshift to'), h('input', { name: 'z_max', type: 'number', step: 'any' })),
      h('label', { class: 'field' }, h('span', {}, 'Classifications (comma-separated)'), h('input', { name: 'classes', placeholder: 'Ia, II' }))),
    h('button', { type: 'submit', class: 'primary' }, 'Search'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { q: form.q.value.trim(), k: Number(form.k.value || 10) };
    if (form.z_min.value !== '') body.z_min = Number(form.z_min.value);
    if (form.z_max.value !== '') body.z_max = Number(form.z_max.value);
    const classes = form.classes.value.split(',').map((c) => c.trim()).filter(Boolean);
    if (classes.length) body.classificationTypes = classes;
    try {
      const data = await api('POST', '/api/summary_query', body);
      clear(results, data.query_results.length ? data.query_results.map((hit) => h('section', { class: 'card', 'data-hit': hit.id },
        h('div', { class: 'row' }, h('a', { href: `/source/${encodeURIComponent(hit.id)}` }, h('strong', {}, hit.id)),
          h('span', { class: 'pill' }, `score ${fmtNumber(hit.score, 3)}`),
          hit.metadata.redshift !== null ? h('span', { class: 'pill' }, `z = ${fmtNumber(hit.metadata.redshift, 4)}`) : null,
          (hit.metadata.class || []).map((c) => h('span', { class: 'pill' }, c))),
        markdown(hit.metadata.summary))) : h('p', { class: 'muted' }, 'No summaries match.'));
    } catch (error) {
      clear(results, errorBox(error));
    }
  });
  clear(main, h('h1', {}, 'Search summaries'), form, results);
  main.setAttribute('data-ready', 'true');
}
