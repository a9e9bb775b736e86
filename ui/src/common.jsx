// Pieces every screen uses: loading data, showing errors as the engine
// words them, and following a job live.

import { useEffect, useState, useCallback } from 'preact/hooks';
import { followJob } from './api.js';

/** Loads `fn()` on mount and on `reload()`; `[data, error, reload]`. */
export function useLoad(fn, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    fn().then(
      (data) => live && setState({ data, error: null }),
      (error) => live && setState({ data: null, error }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return [state.data, state.error, reload];
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return (
    <div class="error" role="alert">
      <p>
        <strong>{error.code ? `${error.code}: ` : ''}</strong>
        {error.message}
      </p>
      {error.details?.length > 0 && (
        <ul>
          {error.details.map((d) => (
            <li key={d}>{d}</li>
          ))}
        </ul>
      )}
      {error.action && <p class="action">What to do: {error.action}</p>}
    </div>
  );
}

export function StateBadge({ state }) {
  return <span class={`badge ${state}`}>{state}</span>;
}

/** A job followed live: state, step, progress and events as they arrive. */
export function JobView({ job: first, onDone }) {
  const [job, setJob] = useState(first);
  const [events, setEvents] = useState([]);
  const [error, setError] = useState(null);
  useEffect(() => {
    const ctl = new AbortController();
    setEvents([]);
    followJob(first.id, {
      signal: ctl.signal,
      onJob: setJob,
      onEvent: (e) => setEvents((es) => [...es, e]),
    }).then(
      (j) => onDone?.(j),
      (e) => ctl.signal.aborted || setError(e),
    );
    return () => ctl.abort();
  }, [first.id]);
  return (
    <section class="job" aria-label={`Job ${job.id}`} data-job={job.id} data-state={job.state}>
      <h3>
        {job.id} <span class="muted">{job.kind}</span> {job.target && <span class="muted">on {job.target}</span>} <StateBadge state={job.state} />
      </h3>
      <div class="progress-line">
        <progress max="100" value={job.progress} aria-label={`Progress of ${job.id}`}>
          {job.progress}%
        </progress>{' '}
        <span aria-live="polite">
          {job.progress}% {job.step}
        </span>
      </div>
      {job.error && <ErrorBox error={job.error} />}
      <ErrorBox error={error} />
      <ol class="events" tabIndex={0} aria-label={`Events of ${job.id}`}>
        {events.map((e) => (
          <li key={e.seq} class={`level-${e.level}`}>
            <time>{e.at.slice(11, 19)}</time> <span class="level">{e.level}</span> {e.message}
          </li>
        ))}
      </ol>
    </section>
  );
}

/** A button that asks once more before a destructive action. */
export function ConfirmButton({ label, confirm, onConfirm, small }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return (
      <button type="button" class={small ? 'danger small' : 'danger'} onClick={() => setAsking(true)}>
        {label}
      </button>
    );
  }
  return (
    <span class="confirm" role="group" aria-label={confirm}>
      <span>{confirm}</span>{' '}
      <button
        type="button"
        class="danger"
        ref={(b) => b?.focus()}
        onClick={() => {
          setAsking(false);
          onConfirm();
        }}
      >
        Yes, {label.toLowerCase()}
      </button>{' '}
      <button type="button" onClick={() => setAsking(false)}>
        Cancel
      </button>
    </span>
  );
}

export function when(ts) {
  return ts ? ts.replace('T', ' ').replace(/\.\d+/, '').replace('Z', ' UTC') : '–';
}

/**
 * What the engine said about one plain field: its `invalid_input` answers
 * read `<field>: <reason>`, so the reason goes next to that input.
 */
export function inputError(error, field) {
  const head = `${field}: `;
  return error?.code === 'invalid_input' && error.message?.startsWith(head) ? error.message.slice(head.length) : null;
}

/** A labelled input; `error` is the engine's word on it, tied to it for screen readers. */
export function TextField({ id, label, value, onInput, error, help, ...attrs }) {
  const described = [help && `${id}-help`, error && `${id}-err`].filter(Boolean).join(' ') || undefined;
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input id={id} value={value} onInput={(e) => onInput(e.currentTarget.value)} aria-invalid={error ? 'true' : undefined} aria-describedby={described} {...attrs} />
      {help && (
        <small class="help" id={`${id}-help`}>
          {help}
        </small>
      )}
      {error && (
        <p class="field-error" id={`${id}-err`}>
          {error}
        </p>
      )}
    </div>
  );
}

export const NO_SECRET = { auth: 'password', password: '', key: '', passphrase: '' };

/** The credentials of `f` (see `Credentials`) as the API takes them. */
export function credentials(f) {
  return f.auth === 'password' ? { password: { password: f.password } } : { key: { private_key: f.key, passphrase: f.passphrase || null } };
}

/** A password or an SSH key (with its passphrase), as a host user logs in. */
export function Credentials({ prefix, value: f, onChange }) {
  const set = (k) => (e) => onChange({ ...f, [k]: e.currentTarget.value });
  return (
    <>
      <fieldset>
        <legend>Log in with</legend>
        {['password', 'key'].map((a) => (
          <span key={a} class="radio">
            <input type="radio" id={`${prefix}-auth-${a}`} name={`${prefix}-auth`} value={a} checked={f.auth === a} onChange={set('auth')} />
            <label for={`${prefix}-auth-${a}`}>{a === 'password' ? 'a password' : 'an SSH key'}</label>
          </span>
        ))}
      </fieldset>
      {f.auth === 'password' ? (
        <div class="field">
          <label for={`${prefix}-password`}>Password</label>
          <input id={`${prefix}-password`} type="password" autocomplete="new-password" value={f.password} onInput={set('password')} />
        </div>
      ) : (
        <>
          <div class="field">
            <label for={`${prefix}-key`}>Private key (PEM or OpenSSH)</label>
            <textarea id={`${prefix}-key`} rows={4} spellcheck={false} value={f.key} onInput={set('key')} />
          </div>
          <div class="field">
            <label for={`${prefix}-passphrase`}>Key passphrase (if any)</label>
            <input id={`${prefix}-passphrase`} type="password" autocomplete="new-password" value={f.passphrase} onInput={set('passphrase')} />
          </div>
        </>
      )}
    </>
  );
}
