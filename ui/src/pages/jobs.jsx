import { get } from '../api.js';
import { useLoad, ErrorBox, StateBadge, JobView, when } from '../common.jsx';

export function Jobs({ arg }) {
  const [jobs, error, reload] = useLoad(() => get('/jobs?limit=50'));
  const [job, jobError] = useLoad(() => (arg ? get(`/jobs/${encodeURIComponent(arg)}`) : Promise.resolve(null)), [arg]);
  return (
    <div class="split">
      <section aria-labelledby="jobs-h">
        <h2 id="jobs-h">Latest jobs</h2>
        <button type="button" onClick={reload}>
          Reload
        </button>
        <ErrorBox error={error} />
        {jobs && (
          <table>
            <caption class="sr-only">The 50 latest jobs, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Kind</th>
                <th scope="col">Target</th>
                <th scope="col">State</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((j) => (
                <tr key={j.id} aria-current={j.id === arg ? 'true' : undefined}>
                  <td>
                    <a href={`#/jobs/${j.id}`}>{j.id}</a>
                  </td>
                  <td>{j.kind}</td>
                  <td>{j.target}</td>
                  <td>
                    <StateBadge state={j.state} />
                  </td>
                  <td>{when(j.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      {arg && (
        <section aria-labelledby="job-h">
          <h2 id="job-h">Job {arg}</h2>
          <ErrorBox error={jobError} />
          {job && <JobView job={job} key={job.id} onDone={reload} />}
        </section>
      )}
    </div>
  );
}
