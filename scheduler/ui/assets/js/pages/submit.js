/**
 * Submit: paste or upload a job spec (the JSON `mxc build` writes), see JSON syntax errors as you type
 * and the coordinator's validation problems after submitting, then jump to the job.
 */
import { api } from '../api.js';
import { errorBox, html, link, render } from '../html.js';

/** Turns V8's "… at position N" into a line and column the reader can find. */
function syntaxError(text, err) {
  const m = /position (\d+)/.exec(err.message);
  if (!m) return err.message;
  const pos = Number(m[1]);
  const before = text.slice(0, pos).split('\n');
  const where = `line ${before.length}, column ${before[before.length - 1].length + 1}`;
  return `${err.message.replace(/\s*\(line \d+ column \d+\)/, '')} (${where})`;
}

function check(text) {
  if (!text.trim()) return { error: 'Paste a job spec or choose a file.' };
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { error: `Not valid JSON: ${syntaxError(text, err)}` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    return { error: 'The job spec must be a JSON object ({ "name": …, "task": … }).' };
  return { value };
}

export async function showSubmit(page) {
  render(
    page,
    html`<h1>Submit a job</h1>
    <p class="muted">Paste the JSON job spec (what <code>mxc build</code> or <code>nix-build</code> of a job writes), or load it from a file.
      Jobs that need store paths must have their closure in the coordinator's cache: use <code>mxc submit</code> for those.</p>
    <form id="submit-form" class="submit-form">
      <div class="file-row"><label>File <input type="file" id="spec-file" accept=".json,application/json"></label></div>
      <textarea id="spec" name="spec" spellcheck="false" rows="18" placeholder='{ "name": "web", "role": "www", … }'></textarea>
      <p id="syntax" class="error" role="alert" hidden></p>
      <div id="result"></div>
      <button type="submit" class="primary" id="submit-button">Submit</button>
    </form>`,
  );
  const form = page.querySelector('#submit-form');
  const textarea = page.querySelector('#spec');
  const syntax = page.querySelector('#syntax');
  const result = page.querySelector('#result');
  const button = page.querySelector('#submit-button');

  const showSyntax = () => {
    const { error } = check(textarea.value);
    // An empty box is not an error until the user submits.
    const shown = textarea.value.trim() ? error : undefined;
    syntax.textContent = shown ?? '';
    syntax.hidden = !shown;
    textarea.classList.toggle('invalid', Boolean(shown));
    return error;
  };
  textarea.addEventListener('input', () => {
    result.replaceChildren();
    showSyntax();
  });
  page.querySelector('#spec-file').addEventListener('change', async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    textarea.value = await file.text();
    result.replaceChildren();
    showSyntax();
  });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const { value, error } = check(textarea.value);
    if (error) {
      syntax.textContent = error;
      syntax.hidden = false;
      return;
    }
    button.disabled = true;
    try {
      const res = await api('POST', '/api/jobs', value);
      render(
        result,
        html`<div class="ok" role="status">
          ${res.changed ? html`Submitted <strong>${res.job.key}</strong> as version ${res.version}.` : html`<strong>${res.job.key}</strong> is unchanged (version ${res.version}); nothing to do.`}
          ${link('Open the job', 'jobs', res.job.id)}
          ${res.workloads?.length ? html`<ul>${res.workloads.map((id) => html`<li>${link(id, 'workloads', id)}</li>`)}</ul>` : ''}
        </div>`,
      );
    } catch (err) {
      render(result, errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
}
