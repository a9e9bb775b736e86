import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { session, login, logout } from './api.js';
import { ErrorBox } from './common.jsx';
import { Overview } from './pages/overview.jsx';
import { Environments } from './pages/environments.jsx';
import { Plugins } from './pages/plugins.jsx';
import { Datasets } from './pages/datasets.jsx';
import { Jobs } from './pages/jobs.jsx';
import { Users } from './pages/users.jsx';
import './style.css';

// Hash routes: the engine serves one page, and a reload keeps the screen.
const SCREENS = [
  ['overview', 'Overview', Overview],
  ['environments', 'Environments', Environments],
  ['plugins', 'Plugins', Plugins],
  ['datasets', 'dSources and VDBs', Datasets],
  ['jobs', 'Jobs', Jobs],
  // Only administrators manage users: the engine refuses the others.
  ['users', 'Users', Users, 'admin'],
];

function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  return { name: name || 'overview', arg: rest.map(decodeURIComponent).join('/') || null };
}

function Login() {
  const [user, setUser] = useState('admin');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  return (
    <main class="login">
      <h1>Doppel</h1>
      <form
        aria-label="Log in"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            await login(user, password);
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        <div class="field">
          <label for="login-user">User</label>
          <input id="login-user" autocomplete="username" value={user} onInput={(e) => setUser(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="login-password">Password</label>
          <input id="login-password" type="password" autocomplete="current-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </div>
        <ErrorBox error={error} />
        <button type="submit" disabled={busy}>
          Log in
        </button>
      </form>
    </main>
  );
}

function App() {
  const [who, setWho] = useState(session());
  const [where, setWhere] = useState(route());
  useEffect(() => {
    const s = () => setWho(session());
    const r = () => setWhere(route());
    window.addEventListener('doppel-session', s);
    window.addEventListener('hashchange', r);
    return () => {
      window.removeEventListener('doppel-session', s);
      window.removeEventListener('hashchange', r);
    };
  }, []);
  if (!who) return <Login />;
  const screens = SCREENS.filter(([, , , role]) => !role || who.user?.role === role);
  const screen = screens.find(([n]) => n === where.name) || screens[0];
  const Screen = screen[2];
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>
        Skip to content
      </a>
      <header>
        <span class="brand">Doppel</span>
        <nav aria-label="Screens">
          <ul>
            {screens.map(([n, label]) => (
              <li key={n}>
                <a href={`#/${n}`} aria-current={n === screen[0] ? 'page' : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who">
          {who.user?.name} ({who.user?.role}){' '}
          <button type="button" onClick={() => logout()}>
            Log out
          </button>
        </span>
      </header>
      <main id="main" tabIndex={-1}>
        <h1>{screen[1]}</h1>
        <Screen arg={where.arg} key={screen[0]} />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app'));
