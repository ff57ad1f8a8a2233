// Where the session id comes from: ?session=ID (a link the carrier's back
// end made with POST /v1/sessions and its API key), or, on a site served by
// `facegate-server --demo`, the demo back end standing in for the carrier's.
export async function carrierSession({ fresh = false } = {}): Promise<string> {
  const given = new URLSearchParams(location.search).get('session');
  if (given && !fresh) return given;
  const response = await fetch('/demo/orders', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ plan: 'basic' }) });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body.session_id as string;
}
