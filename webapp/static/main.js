// The router: one HTML shell, a module per page chosen by the path.
import { api, h, clear, errorBox, relTime } from './lib.js';

const PAGES = [
  [/^\/$/, './sources.js'],
  [/^\/source\/(.+)\/periodogram$/, './periodogram.js'],
  [/^\/source\/(.+)$/, './source.js'],
  [/^\/analysis\/(\d+)$/, './analysis.js'],
  [/^\/services$/, './services.js'],
  [/^\/health$/, './health.js'],
  [/^\/summaries$/, './summaries.js'],
  [/^\/source_stats$/, './stats.js'],
];

async function signOut() {
  await api('DELETE', '/api/session');
  location.assign('/login');
}

function showUser(profile) {
  document.getElementById('nav').hidden = false;
  clear(document.getElementById('who'),
    h('span', { id: 'username' }, profile.username, profile.is_admin ? ' (admin)' : ''),
    h('button', { type: 'button', id: 'sign-out', onclick: signOut }, 'Sign out'));
}

async function start() {
  const main = document.getElementById('app');
  if (location.pathname === '/login') {
    (await import('./login.js')).render(main);
    return;
  }
  let profile;
  try {
    profile = await api('GET', '/api/internal/profile');
  } catch (error) {
    if (error.status !== 401) clear(main, errorBox(error));
    return;
  }
  showUser(profile);
  for (const [pattern, module] of PAGES) {
    const match = pattern.exec(location.pathname);
    if (!match) continue;
    const args = match.slice(1).map(decodeURIComponent);
    try {
      await (await import(module)).render(main, profile, ...args);
    } catch (error) {
      clear(main, errorBox(error));
    }
    return;
  }
  clear(main, h('p', {}, 'No such page. ', h('a', { href: '/' }, 'Back to the sources')));
}

// Relative times ("3 min ago") stay true while a page is open.
setInterval(() => {
  for (const el of document.querySelectorAll('time[datetime]')) el.textContent = relTime(el.getAttribute('datetime'));
}, 15000);

start();
