import { useState } from 'preact/hooks';
import { get, post, put, del, session } from '../api.js';
import { useLoad, ErrorBox, ConfirmButton, TextField, inputError, when } from '../common.jsx';

const ROLES = [
  ['auditor', 'Auditor: reads everything, changes nothing'],
  ['operator', 'Operator: adds environments, links, provisions; acts on what it owns or was granted'],
  ['admin', 'Administrator: everything, users and plugins too'],
];

function AddUser({ onAdded }) {
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState('operator');
  const [error, setError] = useState(null);
  const [done, setDone] = useState(null);
  return (
    <form
      class="card"
      aria-labelledby="add-user-h"
      noValidate
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        setDone(null);
        try {
          const u = await post('/users', { name, password, role });
          // The password leaves the page once sent.
          setPassword('');
          setName('');
          setDone(`Added ${u.name} (${u.role})`);
          onAdded();
        } catch (err) {
          setError(err);
        }
      }}
    >
      <h2 id="add-user-h">Add a user</h2>
      <TextField id="user-name" label="Name" value={name} onInput={setName} autocomplete="off" spellcheck={false} error={inputError(error, 'name')} />
      <TextField
        id="user-password"
        label="Password"
        type="password"
        autocomplete="new-password"
        value={password}
        onInput={setPassword}
        error={inputError(error, 'password')}
      />
      <div class="field">
        <label for="user-role">Role</label>
        <select id="user-role" value={role} onChange={(e) => setRole(e.currentTarget.value)}>
          {ROLES.map(([r, text]) => (
            <option key={r} value={r}>
              {text}
            </option>
          ))}
        </select>
      </div>
      <ErrorBox error={error} />
      {done && (
        <p role="status" class="ok">
          {done}
        </p>
      )}
      <button type="submit">Add user</button>
    </form>
  );
}

function UserTable({ users, onChanged }) {
  const me = session()?.user?.name;
  const [error, setError] = useState(null);
  return (
    <>
      <table>
        <caption class="sr-only">Users</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Role</th>
            <th scope="col">Added</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {users.map((u) => (
            <tr key={u.name} data-user={u.name}>
              <td>{u.name}</td>
              <td>
                <label class="sr-only" for={`role-${u.name}`}>
                  Role of {u.name}
                </label>
                <select
                  id={`role-${u.name}`}
                  value={u.role}
                  onChange={async (e) => {
                    const role = e.currentTarget.value;
                    setError(null);
                    try {
                      await put(`/users/${encodeURIComponent(u.name)}/role`, { role });
                    } catch (err) {
                      setError(err);
                    }
                    // Either way the list shows the role the engine holds.
                    onChanged();
                  }}
                >
                  {ROLES.map(([r]) => (
                    <option key={r} value={r}>
                      {r}
                    </option>
                  ))}
                </select>
              </td>
              <td>{when(u.created_at)}</td>
              <td>
                {u.name !== me && (
                  <ConfirmButton
                    label="Delete"
                    confirm={`Delete user ${u.name} and end their sessions?`}
                    onConfirm={async () => {
                      setError(null);
                      try {
                        await del(`/users/${encodeURIComponent(u.name)}`);
                        onChanged();
                      } catch (e) {
                        setError(e);
                      }
                    }}
                  />
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <ErrorBox error={error} />
    </>
  );
}

/** Every object a right can be held on, as the grants API names them. */
async function grantables() {
  const [envs, dsources, vdbs, plugins] = await Promise.all([get('/environments'), get('/dsources'), get('/vdbs'), get('/plugins')]);
  return [
    ...envs.map((o) => [o.reference, `environment ${o.name}`]),
    ...dsources.map((o) => [o.reference, `dSource ${o.name}`]),
    ...vdbs.map((o) => [o.reference, `VDB ${o.name}`]),
    ...plugins.map((o) => [o.id, `plugin ${o.name}`]),
  ];
}

function Grants({ users }) {
  const [data, loadError, reload] = useLoad(async () => {
    const [grants, objects] = await Promise.all([get('/grants'), grantables()]);
    return { grants, objects };
  });
  const [f, setF] = useState({ object: '', user: '', right: 'provisioner' });
  const [error, setError] = useState(null);
  const act = async (fn) => {
    setError(null);
    try {
      await fn();
      reload();
    } catch (e) {
      setError(e);
    }
  };
  const choice = (k, label, options) => (
    <div class="field">
      <label for={`grant-${k}`}>{label}</label>
      <select id={`grant-${k}`} value={f[k]} onChange={(e) => setF({ ...f, [k]: e.currentTarget.value })} aria-invalid={inputError(error, k) ? 'true' : undefined}>
        {k !== 'right' && <option value="">(choose)</option>}
        {options.map(([v, text]) => (
          <option key={v} value={v}>
            {text}
          </option>
        ))}
      </select>
    </div>
  );
  return (
    <section aria-labelledby="grants-h">
      <h2 id="grants-h">Rights on objects</h2>
      <p class="muted">Whoever creates an object owns it; owners and administrators give others rights on it.</p>
      <ErrorBox error={loadError} />
      {data && data.grants.length === 0 && <p class="muted">No right given yet.</p>}
      {data && data.grants.length > 0 && (
        <table>
          <caption class="sr-only">Rights</caption>
          <thead>
            <tr>
              <th scope="col">Object</th>
              <th scope="col">User</th>
              <th scope="col">Right</th>
              <th scope="col">Since</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {data.grants.map((g) => (
              <tr key={`${g.object} ${g.user}`} data-grant={`${g.object} ${g.user}`}>
                <td>
                  {g.object_name} <span class="muted">{g.object}</span>
                </td>
                <td>{g.user}</td>
                <td>{g.right}</td>
                <td>{when(g.granted_at)}</td>
                <td>
                  <ConfirmButton
                    label="Revoke"
                    confirm={`Take ${g.user}'s ${g.right} right on ${g.object_name} away?`}
                    onConfirm={() => act(() => del('/grants', { object: g.object, user: g.user }))}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {data && (
        <form
          class="card"
          aria-labelledby="grant-h"
          noValidate
          onSubmit={(e) => {
            e.preventDefault();
            act(() => post('/grants', f));
          }}
        >
          <h3 id="grant-h">Give a right</h3>
          {choice('object', 'On', data.objects)}
          {choice(
            'user',
            'To',
            (users || []).map((u) => [u.name, `${u.name} (${u.role})`]),
          )}
          {choice('right', 'Right', [
            ['provisioner', 'Provisioner: may provision, link or export from it, or onto it'],
            ['owner', 'Owner: may also change, delete, set hooks on and grant rights on it'],
          ])}
          <ErrorBox error={error} />
          <button type="submit">Give right</button>
        </form>
      )}
    </section>
  );
}

export function Users() {
  const [users, error, reload] = useLoad(() => get('/users'));
  return (
    <div class="split">
      <section aria-labelledby="users-h">
        <h2 id="users-h">Users of the engine</h2>
        <ErrorBox error={error} />
        {users && <UserTable users={users} onChanged={reload} />}
        <AddUser onAdded={reload} />
      </section>
      <Grants users={users} />
    </div>
  );
}
