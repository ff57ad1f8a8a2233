// The demo SIM-order page: pick a plan → ID → face check → order confirmed
// or refused. /demo/orders stands in for the carrier's back end (which in a
// real deployment calls POST /v1/sessions with its API key, server-side).
//
// ?autostart=1&id=URL runs the whole flow unattended with the first camera
// and the ID picture at URL (automated tests). ?session=ID continues an
// existing session (the phone hand-off link).

import { translate, pickLanguage } from './i18n.js';

const params = new URLSearchParams(location.search);
const lang = pickLanguage(params.get('lang'), navigator.languages || [navigator.language]);
document.documentElement.lang = lang;
const t = (key) => translate(lang, key);
for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);

const $ = (sel) => document.querySelector(sel);
let plan = 'basic';

async function newOrder() {
  const response = await fetch('/demo/orders', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ plan }) });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body.session_id;
}

function showWidget(sessionId) {
  $('#plan-step').hidden = true;
  $('#outcome-step').hidden = true;
  $('#identity-step').hidden = false;
  const widget = document.createElement('face-verify');
  widget.setAttribute('session', sessionId);
  widget.setAttribute('server', location.origin);
  widget.setAttribute('lang', lang);
  if (params.get('autostart') === '1') widget.setAttribute('autostart', '');
  if (params.get('id')) widget.setAttribute('id-src', params.get('id'));
  widget.addEventListener('facegate-result', () => showOutcome(sessionId));
  widget.addEventListener('facegate-retry', async () => showWidget(await newOrder()));
  $('#widget-slot').replaceChildren(widget);
}

// The order system asks its back end for the decision; the widget's own
// answer is only a display hint.
async function showOutcome(sessionId) {
  const response = await fetch(`/demo/orders/${encodeURIComponent(sessionId)}`);
  const record = await response.json();
  $('#outcome-step').hidden = false;
  $('#outcome').textContent = t(record.decision === 'pass' ? 'demo_confirmed' : 'demo_refused');
  $('#outcome').dataset.decision = record.decision || '';
  $('#duplicates').hidden = !(record.possible_duplicates || []).length;
}

$('#plan-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  plan = new FormData(e.target).get('plan');
  showWidget(await newOrder());
});
$('#new-order').addEventListener('click', () => location.assign(location.pathname));

if (params.get('session')) showWidget(params.get('session'));
else if (params.get('autostart') === '1') newOrder().then(showWidget);
