import { get, bytes } from '../api.js';
import { useLoad, ErrorBox, StateBadge, when } from '../common.jsx';

function Gauge({ pool }) {
  const total = pool.size || 1;
  const parts = [
    ['used', pool.used - pool.reclaiming, 'Used'],
    ['reclaiming', pool.reclaiming, 'Reclaiming'],
    ['free', pool.free, 'Free'],
  ].map(([cls, v, label]) => [cls, Math.max(0, v), label]);
  const summary = parts.map(([, v, label]) => `${label} ${bytes(v)}`).join(', ');
  return (
    <figure class="gauge">
      <div class="gauge-bar" role="img" aria-label={`Pool of ${bytes(pool.size)}: ${summary}`}>
        {parts.map(([cls, v]) => (
          <span key={cls} class={`seg ${cls}`} style={{ width: `${(100 * v) / total}%` }} />
        ))}
      </div>
      <figcaption>
        <ul class="legend">
          {parts.map(([cls, v, label]) => (
            <li key={cls}>
              <span class={`swatch ${cls}`} aria-hidden="true" /> {label}: {bytes(v)}
            </li>
          ))}
          <li>Reserve: {bytes(pool.reserve)}</li>
          <li>
            Driver: {pool.driver} {pool.thin_clone ? '(thin clones)' : '(full copies)'}
          </li>
        </ul>
      </figcaption>
    </figure>
  );
}

function JobList({ jobs, empty }) {
  if (!jobs.length) return <p class="muted">{empty}</p>;
  return (
    <ul class="plain">
      {jobs.map((j) => (
        <li key={j.id}>
          <a href={`#/jobs/${j.id}`}>{j.id}</a> {j.kind} {j.target} <StateBadge state={j.state} /> {j.step}{' '}
          <span class="muted">{when(j.created_at)}</span>
          {j.error && <div class="error-inline">{j.error.message}</div>}
        </li>
      ))}
    </ul>
  );
}

export function Overview() {
  const [data, error] = useLoad(async () => {
    const [pool, envs, plugins, dsources, vdbs, running, failed] = await Promise.all([
      get('/pool'),
      get('/environments'),
      get('/plugins'),
      get('/dsources'),
      get('/vdbs'),
      get('/jobs?state=running&limit=20'),
      get('/jobs?state=failed&limit=5'),
    ]);
    return { pool, envs, plugins, dsources, vdbs, running, failed };
  });
  if (error) return <ErrorBox error={error} />;
  if (!data) return <p>Loading…</p>;
  return (
    <div class="overview">
      <section aria-labelledby="pool-h">
        <h2 id="pool-h">Storage pool</h2>
        <Gauge pool={data.pool} />
      </section>
      <section aria-labelledby="counts-h">
        <h2 id="counts-h">Objects</h2>
        <dl class="counts">
          <div>
            <dt>Environments</dt>
            <dd>{data.envs.length}</dd>
          </div>
          <div>
            <dt>Plugins</dt>
            <dd>{data.plugins.length}</dd>
          </div>
          <div>
            <dt>dSources</dt>
            <dd>{data.dsources.length}</dd>
          </div>
          <div>
            <dt>VDBs</dt>
            <dd>{data.vdbs.length}</dd>
          </div>
        </dl>
      </section>
      <section aria-labelledby="running-h">
        <h2 id="running-h">Running jobs</h2>
        <JobList jobs={data.running} empty="No job is running." />
      </section>
      <section aria-labelledby="failed-h">
        <h2 id="failed-h">Recent failures</h2>
        <JobList jobs={data.failed} empty="No job failed recently." />
      </section>
    </div>
  );
}
