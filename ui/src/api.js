// The one way the UI talks to the engine: the public /api/v1 with a bearer
// token from POST /api/v1/login, kept for this browser tab only.

const KEY = 'doppel.session';

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

export function setSession(s) {
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
  window.dispatchEvent(new Event('doppel-session'));
}

/** An error answer, as the engine words it: `{code, message, action?, details[]}`. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || 'internal';
    this.action = error?.action;
    this.details = error?.details || [];
    this.output = error?.output;
  }
}

function headers(extra) {
  const h = { ...extra };
  const s = session();
  if (s?.token) h.Authorization = `Bearer ${s.token}`;
  return h;
}

async function answer(resp) {
  const text = await resp.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!resp.ok) {
    // An expired or revoked token: back to the login page.
    if (resp.status === 401 && session()) setSession(null);
    throw new ApiError(resp.status, body?.error || { message: text || resp.statusText });
  }
  return body;
}

export async function api(method, path, body) {
  const init = { method, headers: headers() };
  if (body instanceof Blob) {
    init.body = body;
    init.headers['Content-Type'] = 'application/octet-stream';
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  return answer(await fetch(`/api/v1${path}`, init));
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path, body) => api('DELETE', path, body);

export async function login(user, password) {
  const r = await answer(
    await fetch('/api/v1/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user, password }),
    }),
  );
  setSession({ token: r.token, user: r.user });
  return r;
}

export async function logout() {
  try {
    await post('/logout');
  } finally {
    setSession(null);
  }
}

/**
 * Follows a job until it ends through its server-sent event stream (read
 * with fetch: EventSource cannot send the token). `onJob` gets each change
 * of the job, `onEvent` each of its events; resolves with the finished job.
 * Should the stream break, it polls instead; leaving the page stops only
 * the following, never the job.
 */
export async function followJob(id, { onJob, onEvent, signal } = {}) {
  let after = 0;
  const seen = (e) => {
    if (e.seq > after) {
      after = e.seq;
      onEvent?.(e);
    }
  };
  try {
    const resp = await fetch(`/api/v1/jobs/${encodeURIComponent(id)}/stream`, {
      headers: headers({ Accept: 'text/event-stream' }),
      signal,
    });
    if (!resp.ok) await answer(resp);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let kind = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) kind = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trimStart();
        }
        if (!data) continue;
        const v = JSON.parse(data);
        if (kind === 'event') seen(v);
        else if (kind === 'job') onJob?.(v);
        else if (kind === 'end') {
          onJob?.(v);
          return v;
        } else if (kind === 'error') throw new ApiError(500, v);
      }
    }
  } catch (e) {
    if (signal?.aborted || e instanceof ApiError) throw e;
  }
  for (;;) {
    if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
    const job = await get(`/jobs/${encodeURIComponent(id)}`);
    for (const e of await get(`/jobs/${encodeURIComponent(id)}/events?after=${after}`)) seen(e);
    onJob?.(job);
    if (['succeeded', 'failed', 'canceled'].includes(job.state)) return job;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export function bytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}
