// Small helpers shared by every page: the API client, DOM building, formatting, dialogs.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function cookie(name) {
  const found = document.cookie.split('; ').find((part) => part.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : '';
}

// Every request goes to the public API with the session cookie; changes carry the CSRF token.
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = cookie('skyhook_csrf');
  const options = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401 && !path.startsWith('/api/session')) {
    const next = encodeURIComponent(location.pathname + location.search);
    location.assign(`/login?next=${next}`);
    throw new ApiError(401, 'Signed out');
  }
  const isJson = (response.headers.get('content-type') || '').includes('json');
  const payload = isJson ? await response.json() : null;
  if (!response.ok || (payload && payload.status === 'error')) {
    throw new ApiError(response.status, (payload && payload.message) || response.statusText);
  }
  return payload ? payload.data : null;
}

// Fetches every page of a paged list (`key` names the items in each page): the first, then
// all the others at once.
export async function allPages(path, key, size = 1000) {
  const sep = path.includes('?') ? '&' : '?';
  const page = (n) => api('GET', `${path}${sep}pageNumber=${n}&numPerPage=${size}`);
  const first = await page(1);
  const count = Math.ceil(first.totalMatches / size);
  const rest = await Promise.all(Array.from({ length: Math.max(0, count - 1) }, (_, i) => page(i + 2)));
  return [first, ...rest].flatMap((data) => data[key]);
}

// h('a', {href: '/x', class: 'y', onclick: fn}, 'text', child, [more]) builds an element.
// Text always goes in as text nodes: nothing from the API is ever parsed as HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name in el && typeof value !== 'string') el[name] = value;
    else el.setAttribute(name, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function asDate(value) {
  if (!value) return null;
  const text = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`;
  return new Date(text);
}

export function relTime(value) {
  const date = asDate(value);
  if (!date) return '';
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  const ago = seconds >= 0;
  const s = Math.abs(seconds);
  const [n, unit] = s < 60 ? [s, 's'] : s < 3600 ? [Math.floor(s / 60), 'min']
    : s < 86400 ? [Math.floor(s / 3600), 'h'] : [Math.floor(s / 86400), 'd'];
  return ago ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

export function timeEl(value) {
  const date = asDate(value);
  if (!date) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: date.toISOString(), title: date.toISOString() }, relTime(value));
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

export function fmtNumber(value, digits = 5) {
  if (value === null || value === undefined) return '—';
  return Number(value).toFixed(digits).replace(/\.?0+$/, '');
}

export function statusBadge(status) {
  return h('span', { class: `badge st-${status}`, 'data-status': status }, status.replace('_', ' '));
}

export const ACTIVE = new Set(['queued', 'dispatching', 'pending']);

export function can(profile, acl) {
  if (profile.is_admin) return true;
  if (profile.acls.includes('View Only')) return false;
  return profile.acls.includes(acl);
}

export function errorBox(error) {
  return h('div', { class: 'error', role: 'alert' }, error.message || String(error));
}

// A modal asking to confirm; resolves true when confirmed.
export function confirmDialog(message, confirmLabel = 'Delete') {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'confirm' },
      h('p', {}, message),
      h('div', { class: 'row' },
        h('span', { class: 'spacer' }),
        h('button', { type: 'button', onclick: () => dialog.close('cancel') }, 'Cancel'),
        h('button', { type: 'button', class: 'danger', onclick: () => dialog.close('yes') },
          confirmLabel)));
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'yes');
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function downloadJson(filename, value) {
  const blob = new Blob([JSON.stringify(value, null, 2)], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const link = h('a', { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Markdown rendered safely: a small subset (headings, paragraphs, lists, code, bold, italics,
// http(s) links) built as DOM nodes from text, so no markup in the text is ever interpreted.
export function markdown(text) {
  const root = h('div', { class: 'markdown' });
  const lines = String(text || '').split('\n');
  let list = null;
  let code = null;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) root.append(h('p', {}, inline(paragraph.join(' '))));
    paragraph = [];
  };
  for (const line of lines) {
    if (line.startsWith('```')) {
      flush();
      if (code) { root.append(h('pre', {}, h('code', {}, code.join('\n')))); code = null; }
      else code = [];
      continue;
    }
    if (code) { code.push(line); continue; }
    const heading = /^(#{1,4})\s+(.*)$/.exec(line);
    const item = /^\s*(?:[-*]|\d+\.)\s+(.*)$/.exec(line);
    if (heading) { flush(); list = null; root.append(h(`h${Math.min(heading[1].length + 2, 6)}`, {}, inline(heading[2]))); }
    else if (item) {
      flush();
      if (!list) { list = h('ul'); root.append(list); }
      list.append(h('li', {}, inline(item[1])));
    } else if (!line.trim()) { flush(); list = null; }
    else { list = null; paragraph.push(line.trim()); }
  }
  if (code) root.append(h('pre', {}, h('code', {}, code.join('\n'))));
  flush();
  return root;
}

function inline(text) {
  const parts = [];
  const pattern = /(\*\*[^*]+\*\*|`[^`]+`|\*[^*]+\*|\[[^\]]+\]\(https?:\/\/[^\s)]+\))/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    parts.push(text.slice(last, match.index));
    const token = match[0];
    if (token.startsWith('**')) parts.push(h('strong', {}, token.slice(2, -2)));
    else if (token.startsWith('`')) parts.push(h('code', {}, token.slice(1, -1)));
    else if (token.startsWith('*')) parts.push(h('em', {}, token.slice(1, -1)));
    else {
      const [, label, href] = /^\[([^\]]+)\]\((.+)\)$/.exec(token);
      parts.push(h('a', { href, rel: 'noopener noreferrer', target: '_blank' }, label));
    }
    last = match.index + token.length;
  }
  parts.push(text.slice(last));
  return parts;
}

let plotlyLoading = null;
// plotly.min.js (from the installed plotly package) is loaded only by pages that plot.
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const script = h('script', { src: '/static/vendor/plotly.min.js' });
      script.addEventListener('load', () => resolve(window.Plotly));
      script.addEventListener('error', () => reject(new Error('Could not load plotly.min.js')));
      document.head.append(script);
    });
  }
  return plotlyLoading;
}

// An MJD as a UTC date and time ("2023-02-25 12:00").
export function mjdDate(mjd) {
  if (mjd === null || mjd === undefined) return '—';
  return new Date((mjd - 40587) * 86400000).toISOString().slice(0, 16).replace('T', ' ');
}
