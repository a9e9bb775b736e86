import { useState } from 'preact/hooks';
import { get, post, put, del, bytes } from '../api.js';
import { useLoad, ErrorBox, JobView, ConfirmButton, TextField, inputError, when } from '../common.jsx';
import { SchemaFields, fieldErrors, initialValue } from '../schemaform.jsx';

const enc = encodeURIComponent;

/**
 * A plugin's definition (none without a plugin) and the schema at `path`
 * in it, for the forms drawn from it: `[definition, schema]`, both null
 * while loading.
 */
function usePluginSchema(plugin, ...path) {
  const [def] = useLoad(() => (plugin ? get(`/plugins/${enc(plugin)}/definition`) : Promise.resolve(null)), [plugin]);
  return [def, def && path.reduce((o, k) => o?.[k], def)];
}

/** dSource → VDBs → child VDBs, each node a link to its details. */
function Tree({ dsources, vdbs, selected }) {
  const children = (dataset) => vdbs.filter((v) => v.parent_dataset === dataset);
  const node = (kind, o) => (
    <li key={o.reference}>
      <a href={`#/datasets/${kind}/${enc(o.name)}`} aria-current={selected === o.reference ? 'true' : undefined}>
        <span class="kind">{kind === 'dsource' ? 'dSource' : 'VDB'}</span> {o.name}
      </a>{' '}
      <span class="muted">
        {o.snapshots} snapshot{o.snapshots === 1 ? '' : 's'}
        {o.enabled ? '' : ', disabled'}
      </span>
      {children(o.dataset).length > 0 && <ul>{children(o.dataset).map((v) => node('vdb', v))}</ul>}
    </li>
  );
  if (!dsources.length && !vdbs.length) return <p class="muted">No dSource yet: link one below.</p>;
  const roots = vdbs.filter((v) => !dsources.some((d) => d.dataset === v.parent_dataset) && !vdbs.some((p) => p.dataset === v.parent_dataset));
  return (
    <ul class="tree" aria-label="dSources and their VDBs">
      {dsources.map((d) => node('dsource', d))}
      {roots.map((v) => node('vdb', v))}
    </ul>
  );
}

/**
 * Snapshots by timeflow, oldest first, on a time axis; each says which VDBs
 * hang from it (their current timeflow starts there), and may be deleted.
 */
function Timeline({ snapshots, vdbs, onDelete }) {
  if (!snapshots.length) return <p class="muted">No snapshot.</p>;
  const flows = [...new Set(snapshots.map((s) => s.timeflow))];
  const times = snapshots.map((s) => Date.parse(s.created_at));
  const lo = Math.min(...times);
  const span = Math.max(...times) - lo || 1;
  const children = (s) => vdbs.filter((v) => v.parent_snapshot === s.reference);
  return (
    <div class="timeline">
      {flows.map((tf) => (
        <div class="timeflow" key={tf}>
          <h4>Timeflow {tf}</h4>
          <div class="axis" aria-hidden="true">
            {snapshots
              .filter((s) => s.timeflow === tf)
              .map((s) => (
                <span
                  key={s.reference}
                  class={children(s).length ? 'tick parent' : 'tick'}
                  style={{ left: `${(100 * (Date.parse(s.created_at) - lo)) / span}%` }}
                  title={[s.reference, ...children(s).map((v) => `VDB ${v.name}`)].join(' · ')}
                />
              ))}
          </div>
          <ol class="plain">
            {snapshots
              .filter((s) => s.timeflow === tf)
              .map((s) => (
                <li key={s.reference} data-snapshot={s.reference}>
                  <strong>{s.reference}</strong> {when(s.created_at)} · {bytes(s.unique_bytes)} unique{' '}
                  {children(s).length > 0 && (
                    <span class="hangs">
                      VDBs from it:{' '}
                      {children(s).map((v, i) => (
                        <span key={v.reference}>
                          {i > 0 && ', '}
                          <a href={`#/datasets/vdb/${enc(v.name)}`}>{v.name}</a>
                        </span>
                      ))}
                    </span>
                  )}{' '}
                  <ConfirmButton small label="Delete" confirm={`Delete ${s.reference}?`} onConfirm={() => onDelete(s)} />
                  <details>
                    <summary>Metadata</summary>
                    <pre tabIndex={0}>{JSON.stringify(s.metadata, null, 2)}</pre>
                  </details>
                </li>
              ))}
          </ol>
        </div>
      ))}
    </div>
  );
}

function SnapshotChoice({ id, label, snapshots, value, onChange }) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        <option value="">The latest</option>
        {snapshots.map((s) => (
          <option key={s.reference} value={s.reference}>
            {s.reference} ({when(s.created_at)})
          </option>
        ))}
      </select>
    </div>
  );
}

function EnvChoice({ id, label, environments, value, onChange, optional }) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        <option value="">{optional ? '(none)' : '(choose)'}</option>
        {environments.map((e) => (
          <option key={e.reference} value={e.reference}>
            {e.name} ({e.host})
          </option>
        ))}
      </select>
    </div>
  );
}

function Provision({ from, snapshots, environments, onJob }) {
  const [, schema] = usePluginSchema(from.plugin, 'virtualSourceDefinition', 'parameters');
  const [name, setName] = useState('');
  const [snapshot, setSnapshot] = useState('');
  const [env, setEnv] = useState('');
  const [params, setParams] = useState(null);
  const [error, setError] = useState(null);
  if (!schema) return null;
  const value = params ?? initialValue(schema) ?? {};
  return (
    <form
      class="card"
      aria-labelledby="prov-h"
      noValidate
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        try {
          onJob(await post('/vdbs', { name, from: from.reference, snapshot: snapshot || null, environment: env, parameters: value }));
        } catch (err) {
          setError(err);
        }
      }}
    >
      <h3 id="prov-h">Provision a VDB from {from.name}</h3>
      <div class="field">
        <label for="prov-name">VDB name</label>
        <input id="prov-name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </div>
      <SnapshotChoice id="prov-snapshot" label="From snapshot" snapshots={snapshots} value={snapshot} onChange={setSnapshot} />
      <EnvChoice id="prov-env" label="Target environment" environments={environments} value={env} onChange={setEnv} />
      <fieldset>
        <legend>Plugin parameters</legend>
        <SchemaFields schema={schema} value={value} onChange={setParams} errors={fieldErrors(error)} environments={environments} prefix="prov" />
      </fieldset>
      <ErrorBox error={error} />
      <button type="submit">Provision</button>
    </form>
  );
}

function Link({ environments, onJob }) {
  const [configs] = useLoad(() => get('/sourceconfigs'));
  const [sc, setSc] = useState('');
  const config = configs?.find((c) => c.reference === sc);
  const [, schema] = usePluginSchema(config?.plugin, 'linkedSourceDefinition', 'parameters');
  const [name, setName] = useState('');
  const [staging, setStaging] = useState('');
  const [params, setParams] = useState(null);
  const [error, setError] = useState(null);
  const value = params ?? (schema ? initialValue(schema) : null) ?? {};
  return (
    <form
      class="card"
      aria-labelledby="link-h"
      noValidate
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        try {
          onJob(
            await post('/dsources', {
              name: name || config?.name,
              source_config: sc,
              staging_environment: staging || null,
              parameters: value,
            }),
          );
        } catch (err) {
          setError(err);
        }
      }}
    >
      <h2 id="link-h">Link a dSource</h2>
      <div class="field">
        <label for="link-sc">Source config</label>
        <select
          id="link-sc"
          value={sc}
          onChange={(e) => {
            setSc(e.currentTarget.value);
            setParams(null);
          }}
        >
          <option value="">(choose)</option>
          {configs?.map((c) => (
            <option key={c.reference} value={c.reference}>
              {c.name} ({c.reference} on {environments.find((e) => e.reference === c.environment)?.name || c.environment})
            </option>
          ))}
        </select>
      </div>
      <div class="field">
        <label for="link-name">dSource name</label>
        <input id="link-name" value={name} placeholder={config?.name} onInput={(e) => setName(e.currentTarget.value)} />
        <small class="help">Default: the source config's name.</small>
      </div>
      <EnvChoice id="link-staging" label="Staging environment (staged plugins)" environments={environments} value={staging} onChange={setStaging} optional />
      {schema && (
        <fieldset>
          <legend>Plugin parameters</legend>
          <SchemaFields schema={schema} value={value} onChange={setParams} errors={fieldErrors(error)} environments={environments} prefix="link" />
        </fieldset>
      )}
      <ErrorBox error={error} />
      <button type="submit" disabled={!sc}>
        Link
      </button>
    </form>
  );
}

/** V2P: a snapshot copied as plain files into a directory of a host, with the plugin's V2P parameters. */
function Export({ obj, snapshots, environments, onJob }) {
  const [def, schema] = usePluginSchema(obj.plugin, 'virtualToPhysicalDefinition', 'parameters');
  const [snapshot, setSnapshot] = useState('');
  const [env, setEnv] = useState('');
  const [target, setTarget] = useState('');
  const [params, setParams] = useState(null);
  const [error, setError] = useState(null);
  if (!def) return null;
  if (!schema) return <p class="muted">This plugin has no V2P (its artifact has no virtualToPhysicalDefinition).</p>;
  const value = params ?? initialValue(schema) ?? {};
  return (
    <form
      class="card"
      aria-labelledby="export-h"
      noValidate
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        try {
          // "The latest" is the newest of the list, which is oldest first.
          const chosen = snapshot || snapshots[snapshots.length - 1]?.reference || '';
          onJob(await post('/exports', { snapshot: chosen, environment: env, target_directory: target, parameters: value }));
        } catch (err) {
          setError(err);
        }
      }}
    >
      <h3 id="export-h">Export a snapshot of {obj.name} (V2P)</h3>
      <SnapshotChoice id="export-snapshot" label="Snapshot" snapshots={snapshots} value={snapshot} onChange={setSnapshot} />
      <EnvChoice id="export-env" label="Host that receives the copy" environments={environments} value={env} onChange={setEnv} />
      <TextField
        id="export-target"
        label="Target directory"
        value={target}
        onInput={setTarget}
        spellcheck={false}
        help="Absolute; the plugin may refuse one that is not empty."
        error={inputError(error, 'target_directory')}
      />
      <fieldset>
        <legend>V2P parameters</legend>
        <SchemaFields schema={schema} value={value} onChange={setParams} errors={fieldErrors(error)} environments={environments} prefix="export" />
      </fieldset>
      <ErrorBox error={error} />
      <button type="submit">Export</button>
    </form>
  );
}

/** A sync with the plugin's snapshot parameters (`doppel dsource sync --params`). */
function SyncWith({ obj, environments, onJob }) {
  const [, schema] = usePluginSchema(obj.plugin, 'snapshotParametersDefinition', 'schema');
  const [params, setParams] = useState(null);
  const [error, setError] = useState(null);
  if (!schema?.properties || !Object.keys(schema.properties).length) return null;
  const value = params ?? initialValue(schema) ?? {};
  return (
    <details class="card sync">
      <summary>Sync with snapshot parameters</summary>
      <form
        aria-label="Sync with snapshot parameters"
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            onJob(await post(`/dsources/${enc(obj.reference)}/sync`, { parameters: value }));
          } catch (err) {
            setError(err);
          }
        }}
      >
        <SchemaFields schema={schema} value={value} onChange={setParams} errors={fieldErrors(error)} environments={environments} prefix="sync" />
        <ErrorBox error={error} />
        <button type="submit">Sync</button>
      </form>
    </details>
  );
}

/** Hook scripts by point (`doppel dsource|vdb hooks`); an emptied script is removed. */
function Hooks({ kind, obj }) {
  const points = kind === 'dsource' ? DSOURCE_HOOKS : VDB_HOOKS;
  const [saved, loadError, reload] = useLoad(() => get(`/hooks/${enc(obj.reference)}`), [obj.reference]);
  const [edits, setEdits] = useState({});
  const [error, setError] = useState(null);
  const [done, setDone] = useState(false);
  if (!saved) return <ErrorBox error={loadError} />;
  const text = (p) => edits[p] ?? saved[p] ?? '';
  return (
    <details class="card" open={Object.keys(saved).length > 0 || undefined}>
      <summary>
        Hooks <span class="muted">({Object.keys(saved).length ? Object.keys(saved).join(', ') : 'none'})</span>
      </summary>
      <form
        aria-label={`Hooks of ${obj.name}`}
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          setDone(false);
          try {
            await put(`/hooks/${enc(obj.reference)}`, edits);
            setEdits({});
            setDone(true);
            reload();
          } catch (err) {
            setError(err);
          }
        }}
      >
        {points.map((p) => (
          <div class="field" key={p}>
            <label for={`hook-${p}`}>{p}</label>
            <textarea
              id={`hook-${p}`}
              rows={text(p) ? 3 : 1}
              spellcheck={false}
              value={text(p)}
              onInput={(e) => setEdits({ ...edits, [p]: e.currentTarget.value })}
              aria-invalid={inputError(error, `hooks.${p}`) ? 'true' : undefined}
            />
          </div>
        ))}
        <ErrorBox error={error} />
        {done && (
          <p role="status" class="ok">
            Hooks saved
          </p>
        )}
        <button type="submit" disabled={!Object.keys(edits).length}>
          Save hooks
        </button>
      </form>
    </details>
  );
}

const DSOURCE_HOOKS = ['pre-sync', 'post-sync'];
const VDB_HOOKS = ['configure-clone', 'pre-refresh', 'post-refresh', 'pre-rollback', 'post-rollback', 'pre-snapshot', 'post-snapshot', 'pre-start', 'post-start', 'pre-stop', 'post-stop'];

/** A VDB with no data, which the plugin initializes (`doppel vdb create-empty`). */
function CreateEmpty({ environments, onJob }) {
  const [plugins] = useLoad(() => get('/plugins'));
  const [plugin, setPlugin] = useState('');
  const [, schema] = usePluginSchema(plugin, 'virtualSourceDefinition', 'parameters');
  const [name, setName] = useState('');
  const [env, setEnv] = useState('');
  const [params, setParams] = useState(null);
  const [error, setError] = useState(null);
  const value = params ?? (schema ? initialValue(schema) : null) ?? {};
  return (
    <form
      class="card"
      aria-labelledby="empty-h"
      noValidate
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        try {
          onJob(await post('/empty-vdbs', { name, plugin, environment: env, parameters: value }));
        } catch (err) {
          setError(err);
        }
      }}
    >
      <h2 id="empty-h">Create an empty VDB</h2>
      <div class="field">
        <label for="empty-plugin">Plugin</label>
        <select
          id="empty-plugin"
          value={plugin}
          onChange={(e) => {
            setPlugin(e.currentTarget.value);
            setParams(null);
          }}
        >
          <option value="">(choose)</option>
          {plugins?.map((p) => (
            <option key={p.id} value={p.id}>
              {p.name}
            </option>
          ))}
        </select>
      </div>
      <TextField id="empty-name" label="VDB name" value={name} onInput={setName} error={inputError(error, 'name')} />
      <EnvChoice id="empty-env" label="Target environment" environments={environments} value={env} onChange={setEnv} />
      {schema && (
        <fieldset>
          <legend>Plugin parameters</legend>
          <SchemaFields schema={schema} value={value} onChange={setParams} errors={fieldErrors(error)} environments={environments} prefix="empty" />
        </fieldset>
      )}
      <ErrorBox error={error} />
      <button type="submit" disabled={!plugin}>
        Create empty VDB
      </button>
    </form>
  );
}

function Detail({ kind, obj, vdbs, environments, onJob, onGone, onChanged }) {
  const [snapshots, snapError, reloadSnaps] = useLoad(() => get(`/snapshots?dataset=${enc(obj.reference)}`), [obj.reference, obj.snapshots]);
  const [parentSnaps] = useLoad(
    async () => {
      if (kind !== 'vdb') return [];
      const all = await get('/snapshots');
      return all.filter((s) => s.dataset === obj.parent_dataset);
    },
    [obj.reference],
  );
  const [to, setTo] = useState('');
  const [refreshTo, setRefreshTo] = useState('');
  const [error, setError] = useState(null);
  const act = async (method, path, body) => {
    setError(null);
    try {
      const r = await (method === 'DELETE' ? del(path) : post(path, body));
      onJob(r, method === 'DELETE');
    } catch (e) {
      setError(e);
    }
  };
  const base = kind === 'dsource' ? `/dsources/${enc(obj.reference)}` : `/vdbs/${enc(obj.reference)}`;
  const env = environments.find((e) => e.reference === (obj.environment || obj.staging_environment));
  return (
    <section class="detail" aria-labelledby="ds-h">
      <h2 id="ds-h">
        {kind === 'dsource' ? 'dSource' : 'VDB'} {obj.name}
      </h2>
      <dl class="facts">
        <dt>Reference</dt>
        <dd>{obj.reference}</dd>
        <dt>Plugin</dt>
        <dd>{obj.plugin}</dd>
        <dt>{kind === 'dsource' ? 'Staging' : 'Target'} environment</dt>
        <dd>{env?.name || obj.environment || obj.staging_environment || '–'}</dd>
        <dt>State</dt>
        <dd>{obj.enabled ? 'enabled' : 'disabled'}</dd>
        {kind === 'vdb' && (
          <>
            <dt>Timeflows</dt>
            <dd>{obj.timeflows}</dd>
          </>
        )}
        {kind === 'vdb' && (
          <>
            <dt>Current timeflow from</dt>
            <dd>{obj.parent_snapshot || '–'}</dd>
          </>
        )}
        <dt>Parameters</dt>
        <dd>
          <code>{JSON.stringify(obj.parameters)}</code>
        </dd>
      </dl>
      <div class="actions">
        {kind === 'dsource' ? (
          <>
            <button type="button" onClick={() => act('POST', `${base}/sync`)}>
              Sync
            </button>
            <button type="button" onClick={() => act('POST', `${base}/sync`, { resync: true })}>
              Resync
            </button>
          </>
        ) : (
          <>
            <button type="button" onClick={() => act('POST', `${base}/snapshot`)}>
              Snapshot
            </button>
            <button type="button" onClick={() => act('POST', `${base}/power/start`)}>
              Start
            </button>
            <button type="button" onClick={() => act('POST', `${base}/power/stop`)}>
              Stop
            </button>
          </>
        )}
        <button type="button" onClick={() => act('POST', kind === 'dsource' ? `${base}/${obj.enabled ? 'disable' : 'enable'}` : `${base}/power/${obj.enabled ? 'disable' : 'enable'}`)}>
          {obj.enabled ? 'Disable' : 'Enable'}
        </button>
        <ConfirmButton label="Delete" confirm={`Delete ${obj.name} and its data?`} onConfirm={() => act('DELETE', base).then(onGone)} />
      </div>
      {kind === 'vdb' && (
        <div class="actions">
          <form
            class="inline"
            aria-label="Refresh from the parent"
            onSubmit={(e) => {
              e.preventDefault();
              act('POST', `${base}/refresh`, { to: refreshTo || null });
            }}
          >
            <SnapshotChoice id="refresh-to" label="Refresh from parent snapshot" snapshots={parentSnaps || []} value={refreshTo} onChange={setRefreshTo} />
            <button type="submit">Refresh</button>
          </form>
          <form
            class="inline"
            aria-label="Rewind to an own snapshot"
            onSubmit={(e) => {
              e.preventDefault();
              act('POST', `${base}/rewind`, { to: to || null });
            }}
          >
            <SnapshotChoice id="rewind-to" label="Rewind to snapshot" snapshots={snapshots || []} value={to} onChange={setTo} />
            <button type="submit">Rewind</button>
          </form>
        </div>
      )}
      {kind === 'dsource' && <SyncWith obj={obj} environments={environments} onJob={onJob} />}
      <ErrorBox error={error} />
      <h3>Snapshots</h3>
      <button type="button" class="small" onClick={reloadSnaps}>
        Reload snapshots
      </button>
      <ErrorBox error={snapError} />
      {snapshots && (
        <Timeline
          snapshots={snapshots}
          vdbs={vdbs}
          onDelete={async (snap) => {
            setError(null);
            try {
              await del(`/snapshots/${enc(snap.reference)}`);
              reloadSnaps();
              onChanged();
            } catch (e) {
              setError(e);
            }
          }}
        />
      )}
      <Hooks kind={kind} obj={obj} />
      {snapshots && <Provision from={obj} snapshots={snapshots} environments={environments} onJob={(j) => onJob(j)} />}
      {snapshots?.length > 0 && <Export obj={obj} snapshots={snapshots} environments={environments} onJob={(j) => onJob(j)} />}
    </section>
  );
}

export function Datasets({ arg }) {
  const [data, error, reload] = useLoad(async () => {
    const [dsources, vdbs, environments] = await Promise.all([get('/dsources'), get('/vdbs'), get('/environments')]);
    return { dsources, vdbs, environments };
  });
  const [job, setJob] = useState(null);
  const [kind, name] = (arg || '').split('/');
  const obj = data && (kind === 'dsource' ? data.dsources : data.vdbs).find((o) => o.name === name || o.reference === name);
  const onJob = (j) => setJob(j);
  return (
    <div class="split">
      <section aria-labelledby="tree-h">
        <h2 id="tree-h">Tree</h2>
        <ErrorBox error={error} />
        {data && <Tree dsources={data.dsources} vdbs={data.vdbs} selected={obj?.reference} />}
        {job && (
          <div class="card">
            <h2>Last action</h2>
            <JobView job={job} key={job.id} onDone={reload} />
          </div>
        )}
        {data && <Link environments={data.environments} onJob={onJob} />}
        {data && <CreateEmpty environments={data.environments} onJob={onJob} />}
      </section>
      {obj && (
        <Detail
          kind={kind}
          obj={obj}
          key={obj.reference}
          vdbs={data.vdbs}
          environments={data.environments}
          onJob={onJob}
          onChanged={reload}
          onGone={() => {
            location.hash = '#/datasets';
          }}
        />
      )}
    </div>
  );
}
