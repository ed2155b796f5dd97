// Sign in: an API token (or the one-time code of a sign-in link) becomes a session cookie.
import { api, h, clear, errorBox } from './lib.js';

function nextPage() {
  const next = new URLSearchParams(location.search).get('next') || '/';
  return next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

async function exchange(main, body) {
  try {
    await api('POST', '/api/session', body);
    location.replace(nextPage());
  } catch (error) {
    const box = main.querySelector('#login-error');
    clear(box, errorBox(error));
  }
}

export function render(main) {
  const token = h('input', {
    type: 'password', id: 'token', name: 'token', autocomplete: 'current-password',
    required: true, placeholder: 'your API token',
  });
  const form = h('form', {
    onsubmit: (event) => { event.preventDefault(); exchange(main, { token: token.value }); },
  },
  h('label', { class: 'field' }, h('span', {}, 'API token'), token),
  h('button', { class: 'primary', type: 'submit' }, 'Sign in'));
  clear(main, h('div', { class: 'card login' },
    h('h1', {}, 'Sign in to skyhook'),
    h('p', { class: 'muted small' },
      'Paste an API token (', h('code', {}, 'skyhook token create'), ' prints one). ',
      'It is kept in an HttpOnly cookie for this browser only.'),
    h('div', { id: 'login-error' }),
    form));
  const code = new URLSearchParams(location.search).get('code');
  if (code) {
    history.replaceState(null, '', '/login'); // the code works once; keep it out of history
    exchange(main, { code });
  }
}
