import { useState } from 'preact/hooks';
import { get, post, del } from '../api.js';
import { useLoad, ErrorBox, JobView, ConfirmButton, when, Credentials, credentials, NO_SECRET, TextField, inputError } from '../common.jsx';
import { SchemaFields, fieldErrors, initialValue } from '../schemaform.jsx';

function AddEnvironment({ onAdded }) {
  const [f, setF] = useState({ name: '', host: '', port: '22', user: '', ...NO_SECRET });
  const [error, setError] = useState(null);
  const [job, setJob] = useState(null);
  const set = (k) => (e) => setF({ ...f, [k]: e.currentTarget.value });
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const port = Number(f.port);
      setJob(await post('/environments', { name: f.name, host: f.host, port, user: f.user, credentials: credentials(f) }));
      // Secrets leave the page's state once sent.
      setF({ ...f, password: '', key: '', passphrase: '' });
    } catch (err) {
      setError(err);
    }
  };
  const text = (k, label, attrs = {}) => (
    <div class="field">
      <label for={`env-${k}`}>{label}</label>
      <input id={`env-${k}`} value={f[k]} onInput={set(k)} {...attrs} />
    </div>
  );
  return (
    <form aria-labelledby="add-env-h" onSubmit={submit} noValidate>
      <h2 id="add-env-h">Add an environment</h2>
      {text('name', 'Name')}
      {text('host', 'Host (name or IP address)', { spellcheck: false })}
      {text('port', 'SSH port', { type: 'number', min: 1, max: 65535 })}
      {text('user', 'OS user', { spellcheck: false })}
      <Credentials prefix="env" value={f} onChange={setF} />
      <ErrorBox error={error} />
      <button type="submit">Add environment</button>
      {job && (
        <JobView
          job={job}
          key={job.id}
          onDone={(j) => {
            if (j.state === 'succeeded') onAdded(f.name);
          }}
        />
      )}
    </form>
  );
}

/** The host users the engine logs in as: the primary one and those added (as `doppel env user`). */
function EnvironmentUsers({ env, onChanged }) {
  const [f, setF] = useState({ name: '', ...NO_SECRET });
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const base = `/environments/${encodeURIComponent(env.reference)}/users`;
  const act = async (fn) => {
    setError(null);
    setBusy(true);
    try {
      await fn();
      onChanged();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="env-users-h">
      <h3 id="env-users-h">Host users</h3>
      <table>
        <caption class="sr-only">Host users of {env.name}</caption>
        <thead>
          <tr>
            <th scope="col">User</th>
            <th scope="col">Logs in with</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {env.users.map((u) => (
            <tr key={u.reference} data-user={u.name}>
              <td>
                {u.name} <span class="muted">{u.reference}</span>
              </td>
              <td>
                {u.auth === 'key' ? 'an SSH key' : 'a password'}
                {u.primary ? ' (primary)' : ''}
              </td>
              <td>
                {!u.primary && <ConfirmButton label="Delete" confirm={`Delete host user ${u.name}?`} onConfirm={() => act(() => del(`${base}/${encodeURIComponent(u.reference)}`))} />}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form
        class="card"
        aria-labelledby="env-user-add-h"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          act(async () => {
            await post(base, { name: f.name, credentials: credentials(f) });
            setF({ name: '', ...NO_SECRET, auth: f.auth });
          });
        }}
      >
        <h4 id="env-user-add-h">Add a host user</h4>
        <TextField id="envuser-name" label="OS user" value={f.name} onInput={(name) => setF({ ...f, name })} spellcheck={false} error={inputError(error, 'name')} />
        <Credentials prefix="envuser" value={f} onChange={setF} />
        <ErrorBox error={error} />
        <button type="submit" disabled={busy}>
          Add host user
        </button>
      </form>
    </section>
  );
}

function AddSourceConfig({ repository, plugin, environments, onAdded }) {
  const schema = plugin?.definition?.discoveryDefinition?.sourceConfigSchema;
  const [value, setValue] = useState(() => initialValue(schema || {}) || {});
  const [error, setError] = useState(null);
  if (!schema) return null;
  return (
    <form
      class="card"
      aria-label={`Add a source config to ${repository.name}`}
      noValidate
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        try {
          await post('/sourceconfigs', { repository: repository.reference, parameters: value });
          setValue(initialValue(schema) || {});
          onAdded();
        } catch (err) {
          setError(err);
        }
      }}
    >
      <h4>Add a source config to {repository.name}</h4>
      <SchemaFields schema={schema} value={value} onChange={setValue} errors={fieldErrors(error)} environments={environments} prefix={`sc-${repository.reference}`} />
      <ErrorBox error={error} />
      <button type="submit">Add source config</button>
    </form>
  );
}

function EnvironmentDetail({ env, environments, onChanged }) {
  const [data, error, reload] = useLoad(async () => {
    const [repos, configs, plugins] = await Promise.all([
      get(`/repositories?environment=${encodeURIComponent(env.reference)}`),
      get(`/sourceconfigs?environment=${encodeURIComponent(env.reference)}`),
      get('/plugins'),
    ]);
    const defs = {};
    await Promise.all(
      [...new Set(repos.map((r) => r.plugin))].map(async (p) => {
        defs[p] = { definition: await get(`/plugins/${encodeURIComponent(p)}/definition`), summary: plugins.find((x) => x.id === p) };
      }),
    );
    return { repos, configs, defs };
  }, [env.reference]);
  const [job, setJob] = useState(null);
  const [actionError, setActionError] = useState(null);
  return (
    <section aria-labelledby="env-detail-h" class="detail">
      <h2 id="env-detail-h">Environment {env.name}</h2>
      <dl class="facts">
        <dt>Reference</dt>
        <dd>{env.reference}</dd>
        <dt>Address</dt>
        <dd>
          {env.host}:{env.port}
        </dd>
        <dt>Host key</dt>
        <dd>
          <code>{env.host_key_fingerprint}</code>
        </dd>
        <dt>Toolkit</dt>
        <dd>{env.toolkit_path}</dd>
        <dt>Added</dt>
        <dd>{when(env.created_at)}</dd>
      </dl>
      <div class="actions">
        <button
          type="button"
          onClick={async () => {
            setActionError(null);
            try {
              setJob(await post(`/environments/${encodeURIComponent(env.reference)}/refresh`));
            } catch (e) {
              setActionError(e);
            }
          }}
        >
          Refresh discovery
        </button>
        <ConfirmButton
          label="Delete"
          confirm={`Delete environment ${env.name}?`}
          onConfirm={async () => {
            setActionError(null);
            try {
              await del(`/environments/${encodeURIComponent(env.reference)}`);
              onChanged(null);
            } catch (e) {
              setActionError(e);
            }
          }}
        />
      </div>
      <ErrorBox error={actionError} />
      {job && <JobView job={job} key={job.id} onDone={reload} />}
      <EnvironmentUsers env={env} onChanged={() => onChanged(env)} />
      <ErrorBox error={error} />
      {data && (
        <>
          <h3>Discovered repositories</h3>
          {data.repos.length === 0 && <p class="muted">None: install a plugin, then refresh.</p>}
          {data.repos.map((r) => (
            <div class="card" key={r.reference}>
              <h4>
                {r.name} <span class="muted">{r.reference}</span>
              </h4>
              <p class="muted">Plugin {data.defs[r.plugin]?.summary?.name || r.plugin}</p>
              <ul class="plain">
                {data.configs
                  .filter((c) => c.repository === r.reference)
                  .map((c) => (
                    <li key={c.reference}>
                      Source config <strong>{c.name}</strong> {c.reference} {c.discovered ? '(discovered)' : '(added by hand)'}{' '}
                      <code>{JSON.stringify(c.parameters)}</code>
                    </li>
                  ))}
              </ul>
              <AddSourceConfig repository={r} plugin={data.defs[r.plugin]} environments={environments} onAdded={reload} />
            </div>
          ))}
        </>
      )}
    </section>
  );
}

export function Environments({ arg }) {
  const [envs, error, reload] = useLoad(() => get('/environments'));
  const selected = envs?.find((e) => e.name === arg || e.reference === arg);
  return (
    <div class="split">
      <section aria-labelledby="envs-h">
        <h2 id="envs-h">Environments</h2>
        <ErrorBox error={error} />
        {envs && envs.length === 0 && <p class="muted">No environment yet.</p>}
        {envs && envs.length > 0 && (
          <table>
            <caption class="sr-only">Environments</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Address</th>
                <th scope="col">Users</th>
              </tr>
            </thead>
            <tbody>
              {envs.map((e) => (
                <tr key={e.reference} aria-current={selected?.reference === e.reference ? 'true' : undefined}>
                  <td>
                    <a href={`#/environments/${encodeURIComponent(e.name)}`}>{e.name}</a>
                  </td>
                  <td>
                    {e.host}:{e.port}
                  </td>
                  <td>{e.users.map((u) => u.name).join(', ')}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <AddEnvironment
          onAdded={(name) => {
            reload();
            location.hash = `#/environments/${encodeURIComponent(name)}`;
          }}
        />
      </section>
      {selected && (
        <EnvironmentDetail
          env={selected}
          environments={envs}
          key={selected.reference}
          onChanged={(still) => {
            // Gone when deleted; else only its users changed.
            if (!still) location.hash = '#/environments';
            reload();
          }}
        />
      )}
    </div>
  );
}
