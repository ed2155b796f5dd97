// The photometry plot (plotly): magnitude and flux views, a colour per filter, error bars,
// upper limits as down arrows, zoom, and analyses' model light curves (median + 68 % band).
import { loadPlotly } from './lib.js';

const ZP = 23.9; // fluxes are in AB at zero point 23.9 (µJy)
const KNOWN = {
  ztfg: '#2e9e48', ztfr: '#d1383b', ztfi: '#c79a0c', sdssu: '#7b4fc4', sdssg: '#3aa05a',
  sdssr: '#e0573a', sdssi: '#b8860b', sdssz: '#6d4c41', bessellux: '#6a3fbf', bessellb: '#2f5bd3',
  bessellv: '#3b9b46', bessellr: '#d1383b', besselli: '#9c6b00', atlasc: '#1f9eb4',
  atlaso: '#ef7d1a', uvot_uvw1: '#8e44ad', uvot_uvw2: '#5b2c6f',
};
const PALETTE = ['#1f77b4', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];

export function filterColours(filters) {
  const colours = {};
  let next = 0;
  for (const filter of [...filters].sort()) {
    colours[filter] = KNOWN[filter.toLowerCase()] || PALETTE[next++ % PALETTE.length];
  }
  return colours;
}

function magToFlux(mag) {
  return 10 ** (-0.4 * (mag - ZP));
}

function translucent(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function pointTraces(points, view, colours) {
  const byFilter = {};
  for (const p of points) (byFilter[p.filter] ||= []).push(p);
  const traces = [];
  for (const [filter, rows] of Object.entries(byFilter)) {
    const colour = colours[filter];
    const detected = rows.filter((p) => p.flux !== null && (view === 'flux' || p.mag !== null));
    const limits = rows.filter((p) => p.flux === null && p.fluxerr !== null);
    traces.push({
      type: 'scatter', mode: 'markers', name: filter, legendgroup: filter,
      x: detected.map((p) => p.mjd),
      y: detected.map((p) => (view === 'mag' ? p.mag : p.flux)),
      error_y: {
        type: 'data', visible: true, thickness: 1, width: 0, color: colour,
        array: detected.map((p) => (view === 'mag' ? p.magerr : p.fluxerr)),
      },
      marker: { color: colour, size: 6 },
      hovertemplate: `${filter} MJD %{x:.3f}<br>%{y:.3f}<extra></extra>`,
    });
    if (limits.length) {
      traces.push({
        type: 'scatter', mode: 'markers', name: `${filter} upper limit`, legendgroup: filter,
        x: limits.map((p) => p.mjd),
        y: limits.map((p) => (view === 'mag' ? p.limiting_mag : 5 * p.fluxerr)),
        marker: { color: translucent(colour, 0.55), size: 9, symbol: 'triangle-down' },
        hovertemplate: `${filter} limit MJD %{x:.3f}<br>%{y:.3f}<extra></extra>`,
      });
    }
  }
  return traces;
}

// model_lightcurve: {filter: [[mjd, mag_median, mag_lo, mag_hi], ...]} (mag_lo the brighter).
function modelTraces(overlay, view, colours) {
  const traces = [];
  const convert = view === 'mag' ? (m) => m : magToFlux;
  for (const [filter, rows] of Object.entries(overlay.curves || {})) {
    if (!rows.length) continue;
    const colour = colours[filter] || '#444';
    const x = rows.map((r) => r[0]);
    const group = `model-${overlay.id}-${filter}`;
    const label = `#${overlay.id} ${filter}`;
    traces.push({
      type: 'scatter', mode: 'lines', x, y: rows.map((r) => convert(r[2])), legendgroup: group,
      line: { width: 0, color: colour }, showlegend: false, hoverinfo: 'skip',
    });
    traces.push({
      type: 'scatter', mode: 'lines', x, y: rows.map((r) => convert(r[3])), legendgroup: group,
      line: { width: 0, color: colour }, fill: 'tonexty', fillcolor: translucent(colour, 0.18),
      name: `${label} 68 %`, showlegend: false, hoverinfo: 'skip',
    });
    traces.push({
      type: 'scatter', mode: 'lines', x, y: rows.map((r) => convert(r[1])), legendgroup: group,
      name: `model ${label}`, line: { color: colour, width: 2, dash: 'dash' },
      hovertemplate: `model ${label} MJD %{x:.2f}<br>%{y:.3f}<extra></extra>`,
    });
  }
  return traces;
}

// The y range of the data alone, so a model's faint tails never squash the points.
function dataRange(points, view) {
  const values = points.flatMap((p) => {
    if (view === 'mag') {
      return p.mag !== null ? [p.mag - (p.magerr || 0), p.mag + (p.magerr || 0)] : [p.limiting_mag];
    }
    return p.flux !== null ? [p.flux - (p.fluxerr || 0), p.flux + (p.fluxerr || 0)] : [5 * p.fluxerr];
  }).filter((v) => v !== null && Number.isFinite(v));
  if (!values.length) return undefined;
  const low = Math.min(...values);
  const high = Math.max(...values);
  const pad = Math.max((high - low) * 0.06, view === 'mag' ? 0.2 : 1);
  return view === 'mag' ? [high + pad, low - pad] : [Math.min(0, low - pad), high + pad];
}

export async function drawPhotometry(element, points, view, overlays) {
  const Plotly = await loadPlotly();
  const filters = new Set(points.map((p) => p.filter));
  for (const overlay of overlays) Object.keys(overlay.curves || {}).forEach((f) => filters.add(f));
  const colours = filterColours(filters);
  const traces = [
    ...overlays.flatMap((o) => modelTraces(o, view, colours)),
    ...pointTraces(points, view, colours),
  ];
  const layout = {
    margin: { l: 56, r: 12, t: 12, b: 40 },
    xaxis: { title: { text: 'MJD', standoff: 6 }, zeroline: false, tickformat: '.0f' },
    yaxis: {
      title: { text: view === 'mag' ? 'AB magnitude' : 'flux (µJy, AB zp 23.9)' },
      range: dataRange(points, view),
      autorange: dataRange(points, view) ? false : (view === 'mag' ? 'reversed' : true),
    },
    legend: { orientation: 'h', y: -0.16, yanchor: 'top' },
    dragmode: 'zoom',
    hovermode: 'closest',
    paper_bgcolor: '#fff',
    plot_bgcolor: '#fff',
  };
  await Plotly.react(element, traces, layout, {
    responsive: true, displaylogo: false, modeBarButtonsToRemove: ['lasso2d', 'select2d'],
  });
}
