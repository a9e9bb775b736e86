import { useState } from 'preact/hooks';
import { get, post, del } from '../api.js';
import { useLoad, ErrorBox, ConfirmButton, when } from '../common.jsx';
import { SchemaFields, fieldErrors, initialValue } from '../schemaform.jsx';

// Where each schema sits in an artifact, and what it is for.
// The last item is the name POST /plugins/{p}/validate/{definition} knows it by.
const SCHEMAS = [
  ['Linked source (link) parameters', (d) => d.linkedSourceDefinition?.parameters, 'linkedSource'],
  ['Virtual source (provision) parameters', (d) => d.virtualSourceDefinition?.parameters, 'virtualSource'],
  ['Source config', (d) => d.discoveryDefinition?.sourceConfigSchema, 'sourceConfig'],
  ['Repository', (d) => d.discoveryDefinition?.repositorySchema, 'repository'],
  ['Snapshot metadata', (d) => d.snapshotSchema, 'snapshot'],
  ['Snapshot (sync) parameters', (d) => d.snapshotParametersDefinition?.schema, 'snapshotParameters'],
  ['V2P parameters', (d) => d.virtualToPhysicalDefinition?.parameters, 'virtualToPhysical'],
];

function SchemaPreview({ plugin, title, schema, which, idx, environments }) {
  const [value, setValue] = useState(() => initialValue(schema) || {});
  const [error, setError] = useState(null);
  const [valid, setValid] = useState(false);
  return (
    <details class="card">
      <summary>{title}</summary>
      <form
        aria-label={`${title}: form preview`}
        noValidate
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          setValid(false);
          try {
            await post(`/plugins/${encodeURIComponent(plugin.id)}/validate/${which}`, value);
            setValid(true);
          } catch (err) {
            setError(err);
          }
        }}
      >
        <SchemaFields schema={schema} value={value} onChange={setValue} errors={fieldErrors(error)} environments={environments} prefix={`preview${idx}`} />
        <ErrorBox error={error} />
        <button type="submit">Check with the engine</button>
        {valid && (
          <span role="status" class="ok">
            Valid.
          </span>
        )}
      </form>
      <details>
        <summary>JSON schema</summary>
        <pre tabIndex={0}>{JSON.stringify(schema, null, 2)}</pre>
      </details>
    </details>
  );
}

function PluginDetail({ plugin, onDeleted }) {
  const [def, error] = useLoad(() => get(`/plugins/${encodeURIComponent(plugin.id)}/definition`), [plugin.id]);
  const [level, setLevel] = useState('info');
  const [logs, logError, reloadLogs] = useLoad(() => get(`/plugins/${encodeURIComponent(plugin.id)}/logs?level=${level}&tail=200`), [plugin.id, level]);
  const [actionError, setActionError] = useState(null);
  const [environments] = useLoad(() => get('/environments'));
  return (
    <section aria-labelledby="plugin-h" class="detail">
      <h2 id="plugin-h">Plugin {plugin.name}</h2>
      <dl class="facts">
        <dt>Id</dt>
        <dd>{plugin.id}</dd>
        <dt>Version</dt>
        <dd>
          {plugin.external_version || '–'} (build {plugin.build_number})
        </dd>
        <dt>Kind</dt>
        <dd>{plugin.kind}</dd>
        <dt>Language</dt>
        <dd>{plugin.language}</dd>
        <dt>Host types</dt>
        <dd>{plugin.host_types.join(', ')}</dd>
        <dt>Installed</dt>
        <dd>{when(plugin.installed_at)}</dd>
      </dl>
      <ConfirmButton
        label="Delete"
        confirm={`Delete plugin ${plugin.name}?`}
        onConfirm={async () => {
          try {
            await del(`/plugins/${encodeURIComponent(plugin.id)}`);
            onDeleted();
          } catch (e) {
            setActionError(e);
          }
        }}
      />
      <ErrorBox error={actionError} />
      <h3>Schemas</h3>
      <p class="muted">Each is shown as the form the UI draws from it.</p>
      <ErrorBox error={error} />
      {def &&
        SCHEMAS.map(([title, pick, which], i) => {
          const s = pick(def);
          return s ? <SchemaPreview key={title} plugin={plugin} title={title} schema={s} which={which} idx={i} environments={environments || []} /> : null;
        })}
      <h3>Logs</h3>
      <div class="field inline">
        <label for="log-level">Level</label>
        <select id="log-level" value={level} onChange={(e) => setLevel(e.currentTarget.value)}>
          <option value="debug">debug</option>
          <option value="info">info</option>
          <option value="error">error</option>
        </select>{' '}
        <button type="button" onClick={reloadLogs}>
          Reload logs
        </button>
      </div>
      <ErrorBox error={logError} />
      {logs && <pre class="logs" tabIndex={0} aria-label={`${level} log of ${plugin.name}`}>{logs.lines.join('\n') || '(empty)'}</pre>}
    </section>
  );
}

export function Plugins({ arg }) {
  const [plugins, error, reload] = useLoad(() => get('/plugins'));
  const [file, setFile] = useState(null);
  const [busy, setBusy] = useState(false);
  const [installError, setInstallError] = useState(null);
  const [installed, setInstalled] = useState(null);
  const selected = plugins?.find((p) => p.id === arg || p.name === arg);
  return (
    <div class="split">
      <section aria-labelledby="plugins-h">
        <h2 id="plugins-h">Installed plugins</h2>
        <ErrorBox error={error} />
        {plugins && plugins.length === 0 && <p class="muted">No plugin yet.</p>}
        <ul class="plain">
          {plugins?.map((p) => (
            <li key={p.id}>
              <a href={`#/plugins/${encodeURIComponent(p.name)}`} aria-current={selected?.id === p.id ? 'true' : undefined}>
                {p.name}
              </a>{' '}
              <span class="muted">
                {p.external_version || p.build_number} · {p.kind} · {p.language}
              </span>
            </li>
          ))}
        </ul>
        <form
          aria-labelledby="install-h"
          onSubmit={async (e) => {
            e.preventDefault();
            if (!file) return;
            setBusy(true);
            setInstallError(null);
            setInstalled(null);
            try {
              const p = await post('/plugins', file);
              setInstalled(p);
              reload();
            } catch (err) {
              setInstallError(err);
            } finally {
              setBusy(false);
            }
          }}
        >
          <h2 id="install-h">Install or upgrade a plugin</h2>
          <div class="field">
            <label for="plugin-file">Plugin artifact (artifact.json from dvp build)</label>
            <input id="plugin-file" type="file" accept=".json,application/json" onChange={(e) => setFile(e.currentTarget.files[0] || null)} />
          </div>
          <button type="submit" disabled={!file || busy}>
            {busy ? 'Installing…' : 'Install'}
          </button>
          <ErrorBox error={installError} />
          {installed && (
            <p role="status" class="ok">
              Installed {installed.name} {installed.external_version || installed.build_number}.
            </p>
          )}
        </form>
      </section>
      {selected && <PluginDetail plugin={selected} key={selected.id} onDeleted={() => { location.hash = '#/plugins'; reload(); }} />}
    </div>
  );
}
