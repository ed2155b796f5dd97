// The source page's photometry statistics card (GET /api/sources/<id>/phot_stat).
import { api, clear, errorBox, fmtNumber, h, mjdDate } from './lib.js';

function detection(stats, which) {
  const mjd = stats[`${which}_detected_mjd`];
  if (mjd === null || mjd === undefined) return h('span', { class: 'muted' }, 'none');
  return [mjdDate(mjd), h('span', { class: 'muted small' },
    ` (MJD ${fmtNumber(mjd, 3)}, ${fmtNumber(stats[`${which}_detected_mag`], 2)} mag in ${stats[`${which}_detected_filter`]})`)];
}

function rate(value) {
  return value === null || value === undefined ? '—' : `${fmtNumber(value, 3)} mag/day`;
}

export function photStatsFacts(stats) {
  const peaks = Object.entries(stats.peak_mag_per_filter || {}).sort();
  return h('dl', { class: 'facts' },
    h('dt', {}, 'Detections'), h('dd', { id: 'stat-detections' }, `${stats.num_det_global} of ${stats.num_obs_global} points`),
    h('dt', {}, 'First detection'), h('dd', { id: 'stat-first' }, detection(stats, 'first')),
    h('dt', {}, 'Last detection'), h('dd', { id: 'stat-last' }, detection(stats, 'last')),
    h('dt', {}, 'Peak'), h('dd', { id: 'stat-peak' }, stats.peak_mag_global === null ? '—'
      : `${fmtNumber(stats.peak_mag_global, 2)} mag at ${mjdDate(stats.peak_mjd_global)}`),
    h('dt', {}, 'Peak per filter'), h('dd', { id: 'stat-peaks' },
      peaks.length ? peaks.map(([f, mag]) => h('span', { class: 'pill', 'data-filter': f }, `${f} ${fmtNumber(mag, 2)}`)) : '—'),
    h('dt', {}, 'Rise rate'), h('dd', { id: 'stat-rise' }, rate(stats.rise_rate)),
    h('dt', {}, 'Decay rate'), h('dd', { id: 'stat-decay' }, rate(stats.decay_rate)));
}

export function photStatsCard(objId) {
  const card = h('section', { class: 'card', id: 'phot-stats' },
    h('div', { class: 'row' }, h('h2', {}, 'Photometry statistics'), h('span', { class: 'spacer' }),
      h('a', { href: '/source_stats', class: 'small' }, 'All sources')),
    h('p', { class: 'muted' }, 'Loading…'));
  api('GET', `/api/sources/${encodeURIComponent(objId)}/phot_stat`)
    .then((stats) => { clear(card, card.firstChild, photStatsFacts(stats)); card.setAttribute('data-loaded', 'true'); })
    .catch((error) => clear(card, card.firstChild, errorBox(error)));
  return card;
}
