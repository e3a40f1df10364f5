// Vigil's SOC dashboard: plain JavaScript, no dependencies. It signs in to
// a session cookie and reads the API; every POST carries the CSRF header.
'use strict';
const $ = (s) => document.querySelector(s);
let csrf = null;
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const sqlText = (s) => "'" + String(s).replace(/'/g, "''") + "'";
const show = (v) => (v !== null && typeof v === 'object' ? JSON.stringify(v) : v);

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  const r = await fetch(path, { method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* text answers */ }
  if (!r.ok) throw new Error((json && json.message) || String(r.status));
  return json ?? text;
}
const sql = async (q) => (await api('POST', '/v1/query', { sql: q })).rows;

function table(cols, rows) {
  return `<table><thead><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join('')}</tr></thead><tbody>${
    rows.map((r) => `<tr>${r.map((v) => `<td>${esc(show(v))}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

// Sign-in.
function showSignIn() { $('#signin').hidden = false; $('#view').hidden = true; $('#nav').hidden = true; }
function signedIn(me) {
  csrf = me.csrf;
  $('#who').textContent = me.name;
  $('#signin').hidden = true; $('#view').hidden = false; $('#nav').hidden = false;
  if (!me.roles.includes('soc') && !me.roles.includes('admin')) {
    $('#view').innerHTML = '<p class="error">This token lacks the soc role.</p>';
    return;
  }
  health(); setInterval(health, 5000);
  live();
  route();
}
$('#signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try { signedIn(await api('POST', '/v1/session', { token: $('#token').value })); $('#token').value = ''; }
  catch (err) { $('#signin-error').textContent = 'Sign-in refused: ' + err.message; }
});
$('#signout').addEventListener('click', async () => { await api('DELETE', '/v1/session'); location.hash = '#/'; location.reload(); });

const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

// Checks the checkpoint's Ed25519 signature (a C2SP signed note) in this
// browser against the log's verifier keys: true, false, or null when the
// browser cannot (WebCrypto needs https or localhost).
async function checkpointSigned(note, keys) {
  if (!globalThis.crypto || !crypto.subtle) return null;
  const cut = note.indexOf('\n\n');
  const msg = new TextEncoder().encode(note.slice(0, cut + 1));
  const lines = note.slice(cut + 2).split('\n');
  for (const vkey of keys.trim().split('\n')) {
    // name+hash+base64: the base64 may itself hold '+'.
    const [name, keyHash] = vkey.split('+', 2);
    const b64 = vkey.slice(name.length + keyHash.length + 2);
    const raw = unb64(b64);
    if (raw[0] !== 1) continue;
    const key = await crypto.subtle.importKey('raw', raw.slice(1), { name: 'Ed25519' }, false, ['verify']);
    for (const line of lines) {
      const m = line.match(/^\u2014 (\S+) (\S+)$/);
      if (!m || m[1] !== name) continue;
      const sig = unb64(m[2]);
      if (hex(sig.slice(0, 4)) === keyHash && await crypto.subtle.verify({ name: 'Ed25519' }, key, sig.slice(4), msg)) return true;
    }
  }
  return false;
}

// The log's health: its size, its latest checkpoint (size, age, and its
// signature checked here).
async function health() {
  const h = $('#health');
  try {
    const [cp, ready, keys] = await Promise.all([
      api('GET', '/v1/checkpoint'), api('GET', '/readyz'), api('GET', '/v1/log-key')]);
    const signed = await checkpointSigned(cp, keys).catch(() => false);
    const age = ready.checkpoint_age_s == null ? '' : ` (${Math.round(ready.checkpoint_age_s)} s ago)`;
    const state = signed === null ? 'signature not checked (needs https)' : signed ? 'signature verified' : 'SIGNATURE INVALID';
    h.textContent = `log ${ready.log_size} records · checkpoint ${cp.split('\n')[1]}${age} · ${state}`;
    h.className = signed === false ? 'health error' : 'health ok';
  } catch (e) { h.textContent = 'log: ' + e.message; h.className = 'health error'; }
}

// Live anomalies: the latest version of each, new ones marked live.
const anomalies = new Map();
const liveIds = new Set();
async function live() {
  (await api('GET', '/v1/anomalies?limit=200')).anomalies.forEach((a) => anomalies.set(a.anomaly_id, a));
  const source = new EventSource('/v1/anomalies/stream');
  source.addEventListener('anomaly', (m) => {
    const a = JSON.parse(m.data);
    anomalies.set(a.anomaly_id, a);
    liveIds.add(a.anomaly_id);
    if (view() === 'list') renderList();
  });
  if (view() === 'list') renderList();
}
const view = () => location.hash.split('/')[1] || 'list';
window.addEventListener('hashchange', route);
function route() {
  const [, v, ...rest] = location.hash.split('/');
  const arg = decodeURIComponent(rest.join('/'));
  if (v === 'anomaly') return anomalyPage(arg);
  if (v === 'agent') return agentPage(arg);
  if (v === 'correlation') return correlationPage(arg);
  if (v === 'responses') return responsesPage();
  if (v === 'findings') return findingsPage();
  return renderList();
}

function renderList() {
  const rows = [...anomalies.values()].sort((a, b) => b.detected_at.localeCompare(a.detected_at));
  $('#view').innerHTML = `<h1>Anomalies <span class="muted">(${rows.length}, live)</span></h1>
   <table id="anomalies"><thead><tr><th>detected</th><th>score</th><th>severity</th><th>agent</th><th>principal</th><th>summary</th><th>response</th></tr></thead><tbody>
   ${rows.map((a) => `<tr class="anomaly${liveIds.has(a.anomaly_id) ? ' live' : ''}" data-id="${esc(a.anomaly_id)}">
     <td class="muted">${esc(a.detected_at)}</td><td class="score sev-${esc(a.severity)}">${esc(a.score)}</td>
     <td class="sev-${esc(a.severity)}">${esc(a.severity)}</td>
     <td><a href="#/agent/${encodeURIComponent(a.agent_id)}">${esc(a.agent_id)}</a></td><td>${esc(a.principal || '')}</td>
     <td>${esc(a.summary)}</td>
     <td>${esc(a.response && a.response.action)} ${esc(a.response && a.response.status)}${a.feedback ? ' · ' + esc(a.feedback.verdict) : ''}</td></tr>`).join('')}
   </tbody></table>`;
  document.querySelectorAll('tr.anomaly').forEach((tr) => tr.addEventListener('click', (e) => {
    if (e.target.tagName !== 'A') location.hash = '#/anomaly/' + encodeURIComponent(tr.dataset.id);
  }));
}

async function anomalyPage(id) {
  const a = anomalies.get(id) || (await api('GET', '/v1/anomalies?limit=10000')).anomalies.find((x) => x.anomaly_id === id);
  if (!a) { $('#view').innerHTML = '<p class="error">No such anomaly.</p>'; return; }
  const ids = a.event_ids.map(sqlText).join(',');
  const events = ids ? await sql(`SELECT occurred_at, event_id, action, resource, verdict, correlation_id FROM events
     WHERE agent_id = ${sqlText(a.agent_id)} AND event_id IN (${ids}) ORDER BY occurred_at`) : [];
  const corr = a.correlation_id ? `<a href="#/correlation/${encodeURIComponent(a.correlation_id)}">${esc(a.correlation_id)}</a>` : '—';
  $('#view').innerHTML = `<h1 class="sev-${esc(a.severity)}">${esc(a.summary)}</h1>
   <div class="kv"><span class="muted">score</span><span class="score">${esc(a.score)} (${esc(a.severity)})</span>
   <span class="muted">agent</span><a href="#/agent/${encodeURIComponent(a.agent_id)}">${esc(a.agent_id)}</a>
   <span class="muted">principal</span><span>${esc(a.principal || '—')}</span>
   <span class="muted">kinds</span><span>${esc(a.kinds.join(', '))}</span>
   <span class="muted">detected</span><span>${esc(a.detected_at)} (event time ${esc(a.event_time)})</span>
   <span class="muted">correlation</span><span>${corr}</span>
   <span class="muted">response</span><span>${esc(JSON.stringify(a.response))}</span>
   <span class="muted">feedback</span><span id="feedback-state">${a.feedback ? esc(a.feedback.verdict) : 'none'}</span></div>
   <p><button id="fp" type="button">False positive</button> <button id="confirm" type="button">Confirm</button> <span id="feedback-msg"></span></p>
   <h2>Observed against expected</h2>
   ${table(['feature', 'observed', 'expected', 'contribution'], a.explanation.map((x) => [x.feature, x.observed, x.expected, x.contribution]))}
   <h2>The events behind it</h2>${table(['occurred_at', 'event_id', 'action', 'resource', 'verdict', 'correlation_id'], events)}`;
  const send = async (verdict) => {
    try {
      await api('POST', `/v1/anomalies/${encodeURIComponent(id)}/feedback`, { verdict, note: 'from the dashboard' });
      $('#feedback-msg').textContent = `feedback recorded: ${verdict}`;
      $('#feedback-msg').className = 'ok';
      $('#feedback-state').textContent = verdict;
    } catch (e) { $('#feedback-msg').textContent = 'refused: ' + e.message; $('#feedback-msg').className = 'error'; }
  };
  $('#fp').addEventListener('click', () => send('false_positive'));
  $('#confirm').addEventListener('click', () => send('confirmed'));
}

// Hour of the week of an hour's start, 0 = Monday 00:00 UTC (as detection counts).
const hourOfWeek = (ms) => { const d = new Date(ms); return ((d.getUTCDay() + 6) % 7) * 24 + d.getUTCHours(); };
const HOUR_MS = 3600000;

// The agent's last week of hourly activity (accepted events) against the
// events its baseline expects at each hour of the week; an hour far above
// it (more than expected + 3 sd + 2, counts taken as Poisson) is marked.
function activityChart(hours, baseline) {
  if (!hours.length) return '<p class="muted">No accepted events.</p>';
  const counts = new Map(hours.map((h) => [Date.parse(h[0]), h[1]]));
  const last = Math.max(...counts.keys());
  const first = Math.max(Math.min(...counts.keys()), last - 167 * HOUR_MS);
  const slots = [];
  for (let t = first; t <= last; t += HOUR_MS) {
    const expected = baseline ? baseline.expected_per_hour[hourOfWeek(t)] : null;
    slots.push({ t, n: counts.get(t) || 0, expected });
  }
  const top = Math.max(1, ...slots.map((s) => Math.max(s.n, s.expected || 0)));
  const pct = (v) => (100 * v / top).toFixed(1);
  const over = (s) => s.expected !== null && s.n > s.expected + 3 * Math.sqrt(s.expected) + 2;
  const bars = slots.map((s) => {
    const tip = `${new Date(s.t).toISOString().slice(0, 13)}:00Z: ${s.n} events` + (s.expected === null ? '' : `, baseline ${s.expected.toFixed(1)}`);
    const mark = s.expected === null ? '' : `<b style="bottom:${pct(s.expected)}%"></b>`;
    return `<div class="slot${over(s) ? ' over' : ''}" title="${esc(tip)}"><i style="height:${pct(s.n)}%"></i>${mark}</div>`;
  }).join('');
  const above = slots.filter(over).length;
  return `<div class="bars" id="activity" data-hours="${slots.length}" data-over="${above}">${bars}</div>
   <p class="muted legend"><span class="key-bar"></span> events that hour <span class="key-base"></span> its baseline for that hour of the week
   ${above ? `<span class="over-note">${above} hour(s) far above it</span>` : ''}</p>`;
}

function baselineFacts(b) {
  if (!b) return '<p class="muted">No baseline: detection has judged no accepted event of this agent yet, or is off.</p>';
  const r = b.rate_per_minute;
  return `<div class="kv" id="baseline">
   <span class="muted">learnt from</span><span>${esc(b.events_learnt)} events, ${esc(b.first_seen)} to ${esc(b.last_seen)} (judged against its ${b.judged_against === 'own' ? 'own baseline' : "role's baseline until it has more"})</span>
   <span class="muted">usual rate</span><span>${r.mean.toFixed(1)} a minute (sd ${r.sd.toFixed(1)}, max ${r.max})</span>
   <span class="muted">resources in 10 min</span><span>${b.resources_per_10_min.mean.toFixed(1)} (max ${b.resources_per_10_min.max})</span>
   <span class="muted">knows</span><span>${b.known.actions} actions, ${b.known.resources} resource patterns, ${b.known.principals} principals, ${b.known.source_ips} source addresses</span>
   ${b.learning_paused_until ? `<span class="muted">learning paused</span><span>until ${esc(b.learning_paused_until)} (after an alert)</span>` : ''}</div>`;
}

async function agentPage(agent) {
  const enc = encodeURIComponent(agent);
  const posture = await api('GET', `/v1/agents/${enc}/posture`).catch((e) => ({ state: 'unknown', reason: e.message }));
  const baseline = await api('GET', `/v1/agents/${enc}/baseline`).catch(() => null);
  const hours = await sql(`SELECT date_trunc('hour', occurred_at) AS hour, count(*) FROM events
     WHERE agent_id = ${sqlText(agent)} AND verdict = 'accepted' GROUP BY 1 ORDER BY 1 DESC LIMIT 168`);
  const recent = await sql(`SELECT occurred_at, action, resource, principal, verdict FROM events WHERE agent_id = ${sqlText(agent)} ORDER BY occurred_at DESC LIMIT 50`);
  const leases = (posture.revocations || []).map((r) => `${r.lease_id}: ${r.status}`).join('; ') || '—';
  $('#view').innerHTML = `<h1>Agent ${esc(agent)}</h1>
   <div class="kv"><span class="muted">posture</span><span class="state-${esc(posture.state)}">${esc(posture.state)}</span>
   <span class="muted">why</span><span>${esc(posture.reason || '')}</span>
   <span class="muted">leases</span><span>${esc(leases)}</span></div>
   ${posture.state === 'suspended' ? '<p><button id="restore" type="button">Restore (admin)</button> <span id="restore-msg"></span></p>' : ''}
   <h2>Activity per hour against its baseline</h2>
   ${activityChart(hours, baseline)}
   <h2>Baseline</h2>${baselineFacts(baseline)}
   <h2>Latest actions</h2>${table(['occurred_at', 'action', 'resource', 'principal', 'verdict'], recent)}`;
  const b = $('#restore');
  if (b) b.addEventListener('click', async () => {
    try { await api('POST', `/v1/agents/${enc}/restore`); agentPage(agent); }
    catch (e) { $('#restore-msg').textContent = e.message; }
  });
}

async function correlationPage(id) {
  const rows = await sql(`SELECT occurred_at, agent_id, action, resource, principal, verdict FROM events
     WHERE correlation_id = ${sqlText(id)} ORDER BY occurred_at LIMIT 500`);
  $('#view').innerHTML = `<h1>Correlation ${esc(id)}</h1><p class="muted">Every action with this correlation id, across agents, in time order.</p>
   ${table(['occurred_at', 'agent_id', 'action', 'resource', 'principal', 'verdict'], rows)}`;
}

// Agent hygiene: stale keys, keys without expiry, zombies, ownerless
// agents, static credentials (GET /v1/findings), worst first.
async function findingsPage() {
  const order = { high: 0, medium: 1, low: 2 };
  const list = (await api('GET', '/v1/findings')).findings
    .sort((a, b) => order[a.severity] - order[b.severity] || a.agent_id.localeCompare(b.agent_id));
  const rows = list.map((f) => `<tr class="finding" data-kind="${esc(f.kind)}"><td class="sev-${esc(f.severity)}">${esc(f.severity)}</td><td>${esc(f.kind)}</td>
     <td><a href="#/agent/${encodeURIComponent(f.agent_id)}">${esc(f.agent_id)}</a></td><td>${esc(f.summary)}</td><td>${esc(f.fix)}</td><td>${esc(f.since)}</td></tr>`).join('');
  $('#view').innerHTML = `<h1>Findings (${list.length})</h1><p class="muted">Agent hygiene judged from the log's evidence against the policy ([hygiene]), as of now.</p>
   <table id="findings"><thead><tr><th>severity</th><th>kind</th><th>agent</th><th>summary</th><th>what to do</th><th>since</th></tr></thead><tbody>${rows}</tbody></table>`;
}

async function responsesPage() {
  const rows = await sql('SELECT received_at, action, agent_id, outcome, anomaly_id FROM responses ORDER BY log_index DESC LIMIT 200');
  $('#view').innerHTML = `<h1>Responses</h1><p class="muted">Step-up requests and results, revocations, suspensions: newest first, each one receipted.</p>
   ${table(['received_at', 'action', 'agent_id', 'outcome', 'anomaly_id'], rows)}`;
}

api('GET', '/v1/session').then(signedIn, showSignIn);
