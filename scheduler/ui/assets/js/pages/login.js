/** The login form, the only thing shown while the coordinator wants a token we do not have. */
import { html, render } from '../html.js';

export function showLogin(view, { message, onToken }) {
  render(
    view,
    html`<section class="login card">
      <h1>Sign in to mxc</h1>
      <p class="muted">This coordinator needs its client token (<code>MXC_API_TOKEN</code>).</p>
      ${message ? html`<p class="note">${message}</p>` : ''}
      <form id="login-form" autocomplete="off">
        <label for="token">Token</label>
        <input id="token" name="token" type="password" required autofocus>
        <p id="login-error" class="error" role="alert" hidden></p>
        <button type="submit" class="primary">Sign in</button>
      </form>
    </section>`,
  );
  const form = view.querySelector('#login-form');
  const error = view.querySelector('#login-error');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = form.token.value.trim();
    if (!value) return;
    form.querySelector('button').disabled = true;
    const problem = await onToken(value);
    if (problem) {
      error.textContent = problem;
      error.hidden = false;
      form.querySelector('button').disabled = false;
      form.token.select();
    }
  });
}
