// A source: details, groups, photometry plot with model overlays, analyses (live), summary,
// classifications, comments and annotations.
import { AnalysesPanel } from './analyses.js';
import { allPages, api, clear, errorBox, fmtNumber, h, loadPlotly, timeEl } from './lib.js';
import { photStatsCard } from './photstats.js';
import { drawPhotometry } from './plot.js';
import { summaryCard } from './summary.js';

function details(source) {
  return h('section', { class: 'card', id: 'details' },
    h('h2', {}, 'Details'),
    h('dl', { class: 'facts' },
      h('dt', {}, 'RA, Dec'), h('dd', { class: 'mono' }, `${fmtNumber(source.ra, 6)}, ${fmtNumber(source.dec, 6)}`),
      h('dt', {}, 'Redshift'), h('dd', {}, source.redshift === null ? '—' : `${fmtNumber(source.redshift, 5)}${source.redshift_error ? ` ± ${fmtNumber(source.redshift_error, 5)}` : ''}`),
      h('dt', {}, 'Groups'), h('dd', { id: 'groups' }, source.groups.map((g) => h('span', { class: 'pill' }, g.name))),
      h('dt', {}, 'Created'), h('dd', {}, timeEl(source.created_at))));
}

function listCard(id, title, items, row) {
  return h('section', { class: 'card', id },
    h('h2', {}, title),
    items.length ? h('ul', { class: 'history' }, items.map((item) => h('li', {}, row(item)))) : h('p', { class: 'muted' }, 'None.'));
}

function notes(comments, classifications, annotations) {
  return [
    listCard('classifications', 'Classifications', classifications, (c) => [
      h('strong', {}, c.classification), c.probability !== null ? ` (p = ${fmtNumber(c.probability, 3)})` : '',
      c.ml ? h('span', { class: 'pill' }, 'ML') : '', ' ', h('span', { class: 'muted small' }, c.taxonomy || '')]),
    listCard('comments', 'Comments', comments, (c) => [
      h('div', { class: 'small muted' }, c.author || 'unknown', c.bot ? ' (bot)' : '', ' · ', timeEl(c.created_at)),
      h('div', {}, c.text)]),
    listCard('annotations', 'Annotations', annotations, (a) => [
      h('div', { class: 'small muted' }, a.origin),
      h('div', { class: 'mono' }, Object.entries(a.data || {}).map(([k, v]) => h('div', {}, `${k}: ${JSON.stringify(v)}`)))]),
  ];
}

// The plot card: view toggle and one checkbox per analysis with a model light curve.
class PhotometryCard {
  constructor(points) {
    this.points = points;
    this.view = 'mag';
    this.overlays = new Map(); // analysis id -> {id, label, curves}
    this.shown = new Set();
    this.plot = h('div', { class: 'plot', id: 'photometry-plot' });
    this.overlayList = h('div', { class: 'overlay-list', id: 'overlays' });
    const toggle = (view, label) => h('button', {
      type: 'button', 'data-view': view, class: view === this.view ? 'primary' : '',
      onclick: (event) => {
        this.view = view;
        this.element.querySelectorAll('[data-view]').forEach((b) => { b.className = b === event.target ? 'primary' : ''; });
        this.draw();
      },
    }, label);
    this.element = h('section', { class: 'card', id: 'photometry' },
      h('div', { class: 'row' }, h('h2', {}, 'Photometry'), h('span', { class: 'muted small' }, `${points.length} points`),
        h('span', { class: 'spacer' }), h('span', { class: 'seg' }, toggle('mag', 'Magnitude'), toggle('flux', 'Flux'))),
      points.length ? this.plot : h('p', { class: 'muted' }, 'No photometry you can see.'),
      this.overlayList);
  }

  setModels(analyses) {
    this.overlays.clear();
    for (const a of analyses) {
      const curves = a.model_lightcurve || a.model_lightcurves;
      if (a.status === 'completed' && curves && typeof curves === 'object') {
        this.overlays.set(a.id, { id: a.id, label: `#${a.id} ${a.analysis_service_name}`, curves });
      }
    }
    clear(this.overlayList, this.overlays.size ? h('span', { class: 'muted small' }, 'Model light curves: ') : null,
      [...this.overlays.values()].map((o) => h('label', {},
        h('input', {
          type: 'checkbox', 'data-overlay': o.id, checked: this.shown.has(o.id),
          onchange: (event) => { if (event.target.checked) this.shown.add(o.id); else this.shown.delete(o.id); this.draw(); },
        }), o.label)));
    this.draw();
  }

  draw() {
    if (!this.points.length) return Promise.resolve();
    const overlays = [...this.shown].filter((id) => this.overlays.has(id)).map((id) => this.overlays.get(id));
    this.drawn = drawPhotometry(this.plot, this.points, this.view, overlays)
      .then(() => this.plot.setAttribute('data-drawn', `${this.view}:${overlays.map((o) => o.id).join(',')}`));
    return this.drawn;
  }
}

export async function render(main, profile, objId) {
  const id = encodeURIComponent(objId);
  loadPlotly(); // fetched and parsed while the data loads
  const analyses = api('GET', `/api/obj/${id}/analysis`);
  const [source, photometry, comments, classifications, annotations, services, groups] = await Promise.all([
    api('GET', `/api/sources/${id}`),
    allPages(`/api/sources/${id}/photometry`, 'photometry'),
    api('GET', `/api/sources/${id}/comments`),
    api('GET', `/api/sources/${id}/classifications`),
    api('GET', `/api/sources/${id}/annotations`),
    api('GET', '/api/analysis_service'),
    api('GET', '/api/groups'),
  ]);
  performance.mark('source-data');
  document.title = `${source.id} · skyhook`;
  const plot = new PhotometryCard(photometry);
  const refreshModels = async () => {
    try { plot.setModels(await api('GET', `/api/obj/${id}/analysis?includeAnalysisData=true`)); }
    catch (error) { plot.overlayList.append(errorBox(error)); }
  };
  const panel = new AnalysesPanel({
    source, profile, services, groups: groups.user_groups || groups.all_groups || groups, photometry,
    onCompleted: refreshModels,
  });
  const summary = summaryCard({ source, profile, services });
  clear(main,
    h('div', { class: 'row' }, h('a', { href: '/' }, '← Sources'), h('span', { class: 'spacer' }),
      h('a', { href: `/source/${id}/periodogram`, id: 'periodogram-link' }, 'Periodogram')),
    h('h1', {}, source.id),
    h('div', { class: 'grid' },
      h('div', {}, plot.element, panel.render()),
      h('div', {}, details(source), photStatsCard(source.id), summary, ...notes(comments, classifications, annotations))));
  await Promise.all([panel.load(analyses), plot.draw()]);
  performance.mark('source-ready'); // bench/source_page.py reads it
  main.setAttribute('data-ready', 'true');
  panel.listen();
  refreshModels();
}
