// Forms drawn from a plugin's JSON schema, for any plugin: the input follows
// the type and format, labels come from prettyName, help from description,
// defaults are filled in and required fields marked. Values are checked by
// the engine only (one set of rules); its violations come back as
// `Pretty Name (/json/pointer): reason` and are shown at the field named.

import { useState } from 'preact/hooks';

/** The violations of an `invalid_parameters` error, keyed by JSON pointer ('' for the whole form). */
export function fieldErrors(err) {
  const out = {};
  for (const d of err?.details || []) {
    const m = /^(.*?) \((\/[^]*?)\): ([^]*)$/.exec(d);
    const path = m ? (m[2] === '/' ? '' : m[2]) : '';
    const text = m ? m[3] : d;
    (out[path] ||= []).push(text);
  }
  return out;
}

function resolve(root, node) {
  let n = node || {};
  for (let hops = 0; n.$ref && hops < 16; hops += 1) {
    if (!n.$ref.startsWith('#/')) return n;
    const target = n.$ref
      .slice(2)
      .split('/')
      .reduce((o, k) => (o ? o[k.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined), root);
    if (!target) return n;
    const { $ref, ...rest } = n;
    n = { ...target, ...rest };
  }
  return n;
}

/** The value a schema starts with: its defaults, nested objects included. */
export function initialValue(schema, root = schema) {
  const s = resolve(root, schema);
  if (s.default !== undefined) return structuredClone(s.default);
  if (s.type === 'object' || s.properties) {
    const v = {};
    for (const [k, p] of Object.entries(s.properties || {})) {
      const d = initialValue(p, root);
      if (d !== undefined) v[k] = d;
    }
    return v;
  }
  return undefined;
}

const pointer = (path, key) => `${path}/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;
const domId = (prefix, path) => `${prefix}${path.replace(/[^A-Za-z0-9_-]/g, '_')}`;

function FieldError({ id, messages }) {
  if (!messages?.length) return null;
  return (
    <p class="field-error" id={id}>
      {messages.join('; ')}
    </p>
  );
}

function Field({ ctx, name, schema, path, value, onChange, required }) {
  const s = resolve(ctx.root, schema);
  const id = domId(ctx.prefix, path);
  const label = s.prettyName || s.title || name;
  const errs = ctx.errors[path];
  const described = [s.description && `${id}-help`, errs?.length && `${id}-err`].filter(Boolean).join(' ') || undefined;
  const help = s.description ? (
    <small class="help" id={`${id}-help`}>
      {s.description}
    </small>
  ) : null;
  const mark = required ? (
    <span class="required" aria-hidden="true">
      {' '}
      *
    </span>
  ) : null;
  const common = {
    id,
    name: path,
    'aria-describedby': described,
    'aria-invalid': errs?.length ? 'true' : undefined,
    'aria-required': required ? 'true' : undefined,
  };
  const type = Array.isArray(s.type) ? s.type.find((t) => t !== 'null') : s.type || (s.properties ? 'object' : 'string');

  if (type === 'object') {
    const req = new Set(s.required || []);
    const v = value && typeof value === 'object' ? value : {};
    return (
      <fieldset class="nested" aria-describedby={described}>
        <legend>
          {label}
          {mark}
        </legend>
        {help}
        <FieldError id={`${id}-err`} messages={errs} />
        {Object.entries(s.properties || {}).map(([k, p]) => (
          <Field
            key={k}
            ctx={ctx}
            name={k}
            schema={p}
            path={pointer(path, k)}
            value={v[k]}
            required={req.has(k)}
            onChange={(nv) => {
              const next = { ...v };
              if (nv === undefined) delete next[k];
              else next[k] = nv;
              onChange(next);
            }}
          />
        ))}
        {!s.properties && (
          <JsonInput common={common} label={`${label} (JSON)`} value={value} onChange={onChange} />
        )}
      </fieldset>
    );
  }

  if (type === 'array') {
    const items = Array.isArray(value) ? value : [];
    const itemSchema = s.items || {};
    return (
      <fieldset class="nested" aria-describedby={described}>
        <legend>
          {label}
          {mark}
        </legend>
        {help}
        <FieldError id={`${id}-err`} messages={errs} />
        {items.map((item, i) => (
          <div class="array-item" key={i}>
            <Field
              ctx={ctx}
              name={`${label} ${i + 1}`}
              schema={{ ...resolve(ctx.root, itemSchema), prettyName: `${label} ${i + 1}` }}
              path={pointer(path, i)}
              value={item}
              onChange={(nv) => onChange(items.map((x, j) => (j === i ? nv : x)))}
            />
            <button type="button" class="small" onClick={() => onChange(items.filter((_, j) => j !== i))}>
              Remove {label} {i + 1}
            </button>
          </div>
        ))}
        <button type="button" class="small" onClick={() => onChange([...items, initialValue(itemSchema, ctx.root)])}>
          Add to {label}
        </button>
      </fieldset>
    );
  }

  let input;
  if (type === 'boolean') {
    return (
      <div class="field checkbox">
        <input type="checkbox" {...common} checked={!!value} onChange={(e) => onChange(e.currentTarget.checked)} />
        <label for={id}>
          {label}
          {mark}
        </label>
        {help}
        <FieldError id={`${id}-err`} messages={errs} />
      </div>
    );
  } else if (Array.isArray(s.enum)) {
    input = (
      <select {...common} value={value === undefined ? '' : JSON.stringify(value)} onChange={(e) => onChange(e.currentTarget.value === '' ? undefined : JSON.parse(e.currentTarget.value))}>
        <option value="">(none)</option>
        {s.enum.map((opt) => (
          <option key={JSON.stringify(opt)} value={JSON.stringify(opt)}>
            {String(opt)}
          </option>
        ))}
      </select>
    );
  } else if (s.format === 'reference') {
    const choices =
      s.referenceType === 'HOST_USER'
        ? ctx.environments.flatMap((e) => e.users.map((u) => ({ value: u.reference, text: `${u.name} on ${e.name}` })))
        : ctx.environments.map((e) => ({ value: e.reference, text: `${e.name} (${e.host})` }));
    input = (
      <select {...common} value={value ?? ''} onChange={(e) => onChange(e.currentTarget.value || undefined)}>
        <option value="">(choose)</option>
        {choices.map((c) => (
          <option key={c.value} value={c.value}>
            {c.text}
          </option>
        ))}
      </select>
    );
  } else if (type === 'integer' || type === 'number') {
    input = (
      <input
        type="number"
        step={type === 'integer' ? 1 : 'any'}
        {...common}
        value={value ?? ''}
        onInput={(e) => {
          const t = e.currentTarget.value;
          onChange(t === '' ? undefined : Number(t));
        }}
      />
    );
  } else if (s.format === 'password') {
    // Never pre-filled and never shown; the browser is told not to keep it.
    input = <input type="password" autocomplete="new-password" {...common} value={value ?? ''} onInput={(e) => onChange(e.currentTarget.value || undefined)} />;
  } else {
    input = (
      <input
        type="text"
        {...common}
        placeholder={s.format === 'unixpath' ? '/absolute/path' : undefined}
        spellcheck={false}
        value={value ?? ''}
        onInput={(e) => onChange(e.currentTarget.value === '' ? undefined : e.currentTarget.value)}
      />
    );
  }
  return (
    <div class="field">
      <label for={id}>
        {label}
        {mark}
      </label>
      {input}
      {help}
      <FieldError id={`${id}-err`} messages={errs} />
    </div>
  );
}

function JsonInput({ common, label, value, onChange }) {
  const [text, setText] = useState(value === undefined ? '' : JSON.stringify(value, null, 2));
  return (
    <div class="field">
      <label for={common.id}>{label}</label>
      <textarea
        {...common}
        rows={3}
        value={text}
        onInput={(e) => {
          setText(e.currentTarget.value);
          try {
            onChange(e.currentTarget.value.trim() ? JSON.parse(e.currentTarget.value) : undefined);
          } catch {
            // Sent as typed once it parses; the engine names what is wrong.
          }
        }}
      />
    </div>
  );
}

/**
 * The fields of an object schema. `errors` is from `fieldErrors`;
 * `environments` fill the choices of `format: reference` fields.
 */
export function SchemaFields({ schema, value, onChange, errors = {}, environments = [], prefix = 'p' }) {
  const ctx = { root: schema, errors, environments, prefix };
  const req = new Set(schema?.required || []);
  const props = Object.entries(resolve(schema, schema || {}).properties || {});
  return (
    <div class="schema-fields">
      {errors[''] && (
        <div class="error" role="alert">
          {errors[''].join('; ')}
        </div>
      )}
      {props.length === 0 && <p class="muted">This plugin takes no parameters here.</p>}
      {props.map(([k, p]) => (
        <Field
          key={k}
          ctx={ctx}
          name={k}
          schema={p}
          path={pointer('', k)}
          value={value?.[k]}
          required={req.has(k)}
          onChange={(nv) => {
            const next = { ...(value || {}) };
            if (nv === undefined) delete next[k];
            else next[k] = nv;
            onChange(next);
          }}
        />
      ))}
    </div>
  );
}
