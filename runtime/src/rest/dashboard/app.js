// The rflink dashboard: plain JavaScript, no framework, no build step, no request leaving the
// JobManager. It reads the same REST API as any other client (Flink 2.3's paths and response
// shapes, bare paths on the same origin) and re-renders the current view every
// `refresh-interval` (from GET /config).
//
// Every field of every response may be missing: readers below fall back to "—". A failing
// endpoint shows an inline error in its own section; the rest of the page keeps working.
//
// A cluster with a REST token (rest.auth.token) answers 401 to the API calls that need it
// (with rest.auth.protect-reads, all of them; else the cancel). On the first 401 the page asks
// for the token once (a prompt shared by every request then under way), keeps it in
// sessionStorage (this tab only, gone when it closes) and sends it as
// `Authorization: Bearer <token>` on every call, the cancel included. A token the cluster then
// refuses is asked for again; dismissing the prompt stops the asking until the page reloads.
//
// Views (hash routes): `#/` cluster overview, jobs and TaskManagers; `#/jobs/<id>` one job
// (graph as SVG, vertices, exceptions, checkpoints, cancel); `#/taskmanagers`.
//
// Tests rely on these DOM hooks (keep them): #cluster-overview [data-field=taskmanagers |
// slots-total | slots-available], #jobs-table tr[data-job-id] [data-field=status],
// #job-page[data-job-id] [data-field=status], svg#job-graph g.vertex[data-vertex-id]
// [data-field=parallelism], path.edge[data-ship-strategy], button#cancel-job, #exceptions,
// #checkpoints, #taskmanagers-table.
(function () {
  'use strict';

  const DEFAULT_REFRESH_MS = 3000;
  const MIN_REFRESH_MS = 250;
  // After a cancel request the job page polls faster for a while, to show the outcome soon.
  const FAST_REFRESH_MS = 500;
  const FAST_REFRESH_FOR_MS = 15000;
  const REQUEST_TIMEOUT_MS = 10000;
  // Where the REST token lives (sessionStorage: this tab only).
  const TOKEN_KEY = 'rflink.rest.token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Job states after which nothing changes any more (Flink's globally terminal states, and
  // SUSPENDED, which ends this JobManager's part).
  const TERMINAL_JOB_STATES = new Set(['FINISHED', 'CANCELED', 'FAILED', 'SUSPENDED']);

  const state = {
    refreshMs: DEFAULT_REFRESH_MS,
    route: null,
    // Bumped on every route change: answers for an older view are dropped.
    generation: 0,
    timer: null,
    running: false,
    again: false,
    fastUntil: 0,
    // Job ids whose cancel request is on its way (the button stays disabled).
    cancelPending: new Set(),
    // The last cancel outcome per job id: {ok, text}.
    cancelNote: new Map(),
    // Keys of exception entries the user opened (kept open across refreshes).
    openExceptions: new Set(),
  };

  // ---------------------------------------------------------------- DOM helpers

  function setAttrs(el, attrs) {
    for (const key of Object.keys(attrs || {})) {
      const value = attrs[key];
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else {
        el.setAttribute(key, value === true ? '' : String(value));
      }
    }
  }

  function appendAll(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  /** An HTML element: h('td', {class: 'num'}, 'text', otherNode). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return appendAll(el, children);
  }

  /** An SVG element. */
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    return appendAll(el, children);
  }

  function replaceContent(el, ...children) {
    if (!el) return;
    el.textContent = '';
    appendAll(el, children);
  }

  /**
   * Renders `build()` into `el` unless `data` is what it rendered last time: an unchanged
   * section keeps its DOM (an open tooltip, a selection, a scroll position). True if it did.
   */
  function renderIfChanged(el, data, build) {
    if (!el) return;
    let signature;
    try {
      signature = JSON.stringify(data);
    } catch (_) {
      signature = null;
    }
    if (signature !== null && el.dataset.signature === signature) return false;
    replaceContent(el, build());
    if (signature !== null) el.dataset.signature = signature;
    else delete el.dataset.signature;
    return true;
  }

  function errorBox(err) {
    return h('div', {class: 'error', role: 'alert'}, errorText(err));
  }

  function errorText(err) {
    return err && err.message ? err.message : String(err);
  }

  // ---------------------------------------------------------------- values

  function num(v) {
    const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
    return typeof n === 'number' && Number.isFinite(n) ? n : null;
  }

  function str(v) {
    return typeof v === 'string' ? v : v === null || v === undefined ? '' : String(v);
  }

  function arr(v) {
    return Array.isArray(v) ? v : [];
  }

  function obj(v) {
    return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
  }

  const DASH = '—';
  const integer = new Intl.NumberFormat('en-US', {maximumFractionDigits: 0});

  function fmtCount(v) {
    const n = num(v);
    return n === null || n < 0 ? DASH : integer.format(n);
  }

  /** 1234567 -> "1.2M". */
  function fmtCompact(v) {
    let n = num(v);
    if (n === null || n < 0) return DASH;
    if (n < 1000) return String(Math.round(n));
    const units = ['k', 'M', 'G', 'T', 'P'];
    let i = -1;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i++;
    }
    return (n < 100 ? n.toFixed(1).replace(/\.0$/, '') : Math.round(n)) + units[i];
  }

  function fmtBytes(v) {
    let n = num(v);
    if (n === null || n < 0) return DASH;
    if (n < 1024) return Math.round(n) + ' B';
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let i = -1;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (n < 100 ? n.toFixed(1) : Math.round(n)) + ' ' + units[i];
  }

  /** Milliseconds, human readable: "850 ms", "12.3 s", "4m 05s", "2h 01m", "3d 4h". */
  function fmtDuration(v) {
    const ms = num(v);
    if (ms === null || ms < 0) return DASH;
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    const hr = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    const pad = (x) => String(x).padStart(2, '0');
    if (d > 0) return `${d}d ${hr}h`;
    if (hr > 0) return `${hr}h ${pad(m)}m`;
    return `${m}m ${pad(sec)}s`;
  }

  /** Epoch millis as local "YYYY-MM-DD HH:MM:SS"; 0, -1 or missing: "—". */
  function fmtTime(v) {
    const ms = num(v);
    if (ms === null || ms <= 0) return DASH;
    const d = new Date(ms);
    if (Number.isNaN(d.getTime())) return DASH;
    const pad = (x) => String(x).padStart(2, '0');
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  function fmtClock(d) {
    const pad = (x) => String(x).padStart(2, '0');
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  /** Epoch millis as local "HH:MM:SS". */
  function fmtClockOf(v) {
    const ms = num(v);
    return ms === null || ms <= 0 ? '' : fmtClock(new Date(ms));
  }

  function statusClass(status) {
    return 'status-' + str(status).toLowerCase().replace(/[^a-z]/g, '');
  }

  function badge(status, field) {
    const text = str(status) || 'UNKNOWN';
    return h('span', {class: `badge ${statusClass(text)}`, 'data-field': field}, text);
  }

  // ---------------------------------------------------------------- REST token

  const auth = {
    // The token when sessionStorage is unavailable (private modes, storage disabled).
    memory: '',
    // The prompt under way, shared by every request that got a 401 meanwhile.
    asking: null,
    // The user dismissed the prompt: no more asking until the page reloads.
    declined: false,
  };

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || auth.memory;
    } catch (_) {
      return auth.memory;
    }
  }

  function storeToken(token) {
    auth.memory = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      // Kept in memory only.
    }
  }

  /**
   * After a 401 to a request sent with `sent` ('' for none): the token to retry with, or null.
   * A token entered meanwhile (by another request's prompt) is used at once; else the user is
   * asked once, however many requests are waiting.
   */
  async function tokenAfter401(sent) {
    const current = storedToken();
    if (current && current !== sent) return current;
    if (auth.declined) return null;
    if (!auth.asking) {
      auth.asking = Promise.resolve()
        .then(() => {
          const question = sent
            ? 'The cluster refused the REST token. Enter the rflink REST token (rest.auth.token):'
            : 'This rflink cluster requires its REST token (rest.auth.token). Enter it:';
          const entered = window.prompt(question, '');
          const token = entered === null ? '' : entered.trim();
          // A header carries visible ASCII only.
          if (!token || !/^[\x21-\x7e]+$/.test(token)) {
            auth.declined = true;
            return null;
          }
          storeToken(token);
          return token;
        })
        .finally(() => {
          auth.asking = null;
        });
    }
    return auth.asking;
  }

  // ---------------------------------------------------------------- REST

  /**
   * GET (or `options.method`) a REST path; the parsed JSON body, or an Error saying why not.
   * Sends the REST token when there is one; a 401 asks for it (see the top) and retries once.
   */
  async function api(path, options, retried) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const token = storedToken();
    const headers = {Accept: 'application/json'};
    if (token) headers.Authorization = `Bearer ${token}`;
    let text;
    let response;
    try {
      response = await fetch(path, {
        method: 'GET',
        cache: 'no-store',
        signal: controller.signal,
        ...options,
        headers,
      });
      text = await response.text();
    } catch (e) {
      const why =
        e && e.name === 'AbortError'
          ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`
          : `unreachable (${errorText(e)})`;
      throw new Error(`${path}: ${why}`);
    } finally {
      clearTimeout(timer);
    }
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (_) {
        body = null;
      }
    }
    if (response.status === 401 && !retried) {
      const next = await tokenAfter401(token);
      if (next) return api(path, options, true);
    }
    if (!response.ok) {
      // Flink's error body: {"errors": ["message", "stack trace…"]}; the first line suffices.
      const errors = arr(body && body.errors).map(str).filter(Boolean);
      let message = errors.length ? errors[0].split('\n')[0] : response.statusText;
      if (message.length > 300) message = message.slice(0, 300) + '…';
      const err = new Error(`${path}: ${response.status}${message ? ' ' + message : ''}`);
      err.status = response.status;
      throw err;
    }
    if (text && body === null) throw new Error(`${path}: the answer is not JSON`);
    return body === null ? {} : body;
  }

  /** Runs the requests at once; each result is {ok: true, value} or {ok: false, error}. */
  async function settle(requests) {
    const results = await Promise.allSettled(requests);
    return results.map((r) =>
      r.status === 'fulfilled' ? {ok: true, value: r.value} : {ok: false, error: r.reason},
    );
  }

  // ---------------------------------------------------------------- routing and refresh

  function parseRoute() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const job = hash.match(/^\/jobs\/([^/?#]+)/);
    if (job) return {view: 'job', jobId: decodeURIComponent(job[1])};
    if (/^\/taskmanagers\/?$/.test(hash)) return {view: 'taskmanagers'};
    return {view: 'overview'};
  }

  function onRouteChange() {
    state.generation++;
    state.route = parseRoute();
    state.fastUntil = 0;
    for (const a of document.querySelectorAll('[data-nav]')) {
      a.classList.toggle('active', a.dataset.nav === state.route.view);
    }
    const app = document.getElementById('app');
    replaceContent(app, VIEWS[state.route.view].mount(state.route));
    window.scrollTo(0, 0);
    refreshNow();
  }

  /** Refreshes the current view now (or right after the refresh under way). */
  async function refreshNow() {
    if (state.running) {
      state.again = true;
      return;
    }
    state.running = true;
    clearTimeout(state.timer);
    try {
      do {
        state.again = false;
        const generation = state.generation;
        const route = state.route;
        let failures = 0;
        try {
          failures = await VIEWS[route.view].refresh(route, () => generation === state.generation);
        } catch (e) {
          // A rendering bug must not stop the refresh loop.
          console.error(e);
          failures = 1;
        }
        if (generation === state.generation) markUpdated(failures);
      } while (state.again);
    } finally {
      state.running = false;
      const fast = state.route.view === 'job' && Date.now() < state.fastUntil;
      state.timer = setTimeout(refreshNow, fast ? FAST_REFRESH_MS : state.refreshMs);
    }
  }

  function markUpdated(failures) {
    const el = document.getElementById('last-updated');
    if (!el) return;
    const text = `Updated ${fmtClock(new Date())}`;
    el.textContent = failures ? `${text} · ${failures} request(s) failed` : text;
    el.classList.toggle('warn', failures > 0);
  }

  // ---------------------------------------------------------------- overview

  const OverviewView = {
    mount() {
      document.title = 'rflink · Overview';
      return h(
        'div',
        {class: 'view'},
        h('h1', {}, 'Cluster overview'),
        overviewCards(),
        h('section', {class: 'card'}, h('h2', {}, 'Jobs'), h('div', {id: 'jobs-section', class: 'scroll-x'})),
        h(
          'section',
          {class: 'card'},
          h('h2', {}, 'TaskManagers'),
          h('div', {id: 'taskmanagers-section', class: 'scroll-x'}),
        ),
      );
    },

    async refresh(route, current) {
      const [overview, jobs, tms] = await settle([
        api('/overview'),
        api('/jobs/overview'),
        api('/taskmanagers'),
      ]);
      if (!current()) return 0;
      fillOverview(overview);
      renderSection('jobs-section', jobs, renderJobsTable);
      renderSection('taskmanagers-section', tms, (v) => renderTaskManagers(v, false));
      return [overview, jobs, tms].filter((r) => !r.ok).length;
    },
  };

  const TaskManagersView = {
    mount() {
      document.title = 'rflink · TaskManagers';
      return h(
        'div',
        {class: 'view'},
        h('h1', {}, 'TaskManagers'),
        overviewCards(),
        h('section', {class: 'card'}, h('div', {id: 'taskmanagers-section', class: 'scroll-x'})),
      );
    },

    async refresh(route, current) {
      const [overview, tms] = await settle([api('/overview'), api('/taskmanagers')]);
      if (!current()) return 0;
      fillOverview(overview);
      renderSection('taskmanagers-section', tms, (v) => renderTaskManagers(v, true));
      return [overview, tms].filter((r) => !r.ok).length;
    },
  };

  /** A section showing `result` rendered by `build`, or its error. */
  function renderSection(id, result, build) {
    const el = document.getElementById(id);
    if (result.ok) {
      renderIfChanged(el, result.value, () => build(result.value));
    } else {
      renderIfChanged(el, {error: errorText(result.error)}, () => errorBox(result.error));
    }
  }

  /** Header cells; those of the `numeric` columns align right, as their cells do. */
  function headCells(names, numeric) {
    const right = new Set(numeric || []);
    return names.map((t) => h('th', {class: right.has(t) ? 'num' : null}, t));
  }

  function stat(label, ...value) {
    return h('div', {class: 'stat'}, h('div', {class: 'stat-label'}, label), h('div', {class: 'stat-value'}, value));
  }

  function field(name, cls) {
    return h('span', {'data-field': name, class: cls}, DASH);
  }

  function overviewCards() {
    return h(
      'section',
      {id: 'cluster-overview', class: 'stats'},
      stat('TaskManagers', field('taskmanagers')),
      stat(
        'Slots free / total',
        field('slots-available'),
        h('span', {class: 'sep'}, ' / '),
        field('slots-total'),
      ),
      stat('Running jobs', field('jobs-running', 'c-running')),
      stat('Finished', field('jobs-finished', 'c-finished')),
      stat('Cancelled', field('jobs-cancelled', 'c-canceled')),
      stat('Failed', field('jobs-failed', 'c-failed')),
      h('div', {class: 'overview-error'}),
    );
  }

  function fillOverview(result) {
    const root = document.getElementById('cluster-overview');
    if (!root) return;
    const o = result.ok ? obj(result.value) : {};
    for (const name of [
      'taskmanagers',
      'slots-total',
      'slots-available',
      'jobs-running',
      'jobs-finished',
      'jobs-cancelled',
      'jobs-failed',
    ]) {
      const el = root.querySelector(`[data-field="${name}"]`);
      if (el) el.textContent = fmtCount(o[name]);
    }
    // The version comes from /config; /overview names it too, should /config have failed.
    const version = document.getElementById('version');
    if (version && !version.textContent && o['flink-version']) {
      version.textContent = versionText(o['flink-commit'], o['flink-version']);
    }
    const error = root.querySelector('.overview-error');
    renderIfChanged(error, result.ok ? null : errorText(result.error), () =>
      result.ok ? [] : errorBox(result.error),
    );
  }

  // Running jobs first, then the newest.
  function jobOrder(a, b) {
    const ra = TERMINAL_JOB_STATES.has(str(a.state)) ? 1 : 0;
    const rb = TERMINAL_JOB_STATES.has(str(b.state)) ? 1 : 0;
    if (ra !== rb) return ra - rb;
    return (num(b['start-time']) || 0) - (num(a['start-time']) || 0);
  }

  function renderJobsTable(value) {
    const jobs = arr(obj(value).jobs).filter((j) => j && j.jid).slice().sort(jobOrder);
    const rows = jobs.map((j) => {
      const jid = str(j.jid);
      const href = `#/jobs/${encodeURIComponent(jid)}`;
      return h(
        'tr',
        {
          'data-job-id': jid,
          class: 'link-row',
          onclick: (e) => {
            if (!e.target.closest('a')) location.hash = href;
          },
        },
        h('td', {}, h('a', {href, class: 'job-name'}, str(j.name) || '(unnamed job)')),
        h('td', {class: 'mono'}, jid),
        h('td', {}, badge(j.state, 'status')),
        h('td', {class: 'nowrap'}, fmtTime(j['start-time'])),
        h('td', {class: 'nowrap'}, fmtDuration(j.duration)),
        h('td', {}, taskCounts(j.tasks)),
      );
    });
    if (!rows.length) {
      rows.push(h('tr', {class: 'empty'}, h('td', {colspan: 6}, 'No jobs yet.')));
    }
    return h(
      'table',
      {id: 'jobs-table', class: 'table'},
      h(
        'thead',
        {},
        h('tr', {}, headCells(['Name', 'Job ID', 'Status', 'Start time', 'Duration', 'Tasks'])),
      ),
      h('tbody', {}, rows),
    );
  }

  /** Non-zero task counts per state as small coloured pills ({running: 2, total: 4, ...}). */
  function taskCounts(tasks) {
    const t = obj(tasks);
    const pills = [];
    let sum = 0;
    for (const key of Object.keys(t)) {
      const n = num(t[key]);
      if (key.toLowerCase() === 'total' || n === null || n <= 0) continue;
      sum += n;
      pills.push(
        h('span', {class: `pill ${statusClass(key)}`, title: key.toUpperCase()}, `${n} ${key.toLowerCase()}`),
      );
    }
    const total = num(t.total);
    if (!pills.length) return h('span', {class: 'muted'}, total !== null ? `${total} total` : DASH);
    if (total !== null && total !== sum) pills.push(h('span', {class: 'muted'}, ` of ${total}`));
    return h('span', {class: 'pills'}, pills);
  }

  /** Flink's `timeSinceLastHeartbeat` holds the last heartbeat's epoch millis, despite its name. */
  function fmtHeartbeat(v) {
    const n = num(v);
    if (n === null || n <= 0) return DASH;
    if (n > 1e11) {
      const ago = Math.max(0, Date.now() - n);
      return `${fmtTime(n)} (${fmtDuration(ago)} ago)`;
    }
    return `${fmtDuration(n)} ago`;
  }

  function renderTaskManagers(value, detailed) {
    const tms = arr(obj(value).taskmanagers).filter(Boolean);
    const head = ['ID', 'Address', 'Slots free / total', 'Last heartbeat'];
    if (detailed) head.push('Data port', 'CPU cores', 'Physical memory');
    const rows = tms.map((tm) => {
      const hw = obj(tm.hardware);
      const cells = [
        h('td', {class: 'mono'}, str(tm.id) || DASH),
        h('td', {class: 'mono nowrap'}, str(tm.path) || DASH),
        h('td', {class: 'nowrap'}, `${fmtCount(tm.freeSlots)} / ${fmtCount(tm.slotsNumber)}`),
        h('td', {class: 'nowrap'}, fmtHeartbeat(tm.timeSinceLastHeartbeat)),
      ];
      if (detailed) {
        cells.push(
          h('td', {}, num(tm.dataPort) !== null && tm.dataPort > 0 ? String(tm.dataPort) : DASH),
          h('td', {}, fmtCount(hw.cpuCores)),
          h('td', {}, fmtBytes(hw.physicalMemory)),
        );
      }
      return h('tr', {'data-taskmanager-id': str(tm.id)}, cells);
    });
    if (!rows.length) {
      rows.push(h('tr', {class: 'empty'}, h('td', {colspan: head.length}, 'No TaskManager registered.')));
    }
    return h(
      'table',
      {id: 'taskmanagers-table', class: 'table'},
      h('thead', {}, h('tr', {}, headCells(head))),
      h('tbody', {}, rows),
    );
  }

  // ---------------------------------------------------------------- job page

  const JobView = {
    mount(route) {
      document.title = 'rflink · Job';
      const jid = route.jobId;
      return h(
        'div',
        {id: 'job-page', class: 'view', 'data-job-id': jid},
        h('div', {class: 'crumbs'}, h('a', {href: '#/'}, '← Jobs')),
        h(
          'section',
          {class: 'card job-header'},
          h(
            'div',
            {class: 'job-title'},
            h('h1', {'data-field': 'name'}, 'Job'),
            h('span', {class: 'badge', 'data-field': 'status'}, '…'),
            h('span', {class: 'spacer'}),
            h('span', {class: 'cancel-note', 'data-field': 'cancel-note'}),
            h('span', {'data-field': 'actions'}),
          ),
          h('div', {class: 'job-meta', 'data-field': 'meta'}, h('span', {class: 'mono'}, jid)),
          h('div', {'data-field': 'job-error'}),
        ),
        h(
          'section',
          {class: 'card'},
          h('div', {class: 'card-head'}, h('h2', {}, 'Job graph'), backpressureLegend()),
          h('div', {id: 'graph-section', class: 'graph-scroll'}),
        ),
        h('section', {class: 'card'}, h('h2', {}, 'Vertices'), h('div', {id: 'vertices-section', class: 'scroll-x'})),
        h('section', {class: 'card'}, h('h2', {}, 'Exceptions'), h('div', {id: 'exceptions'})),
        h('section', {class: 'card'}, h('h2', {}, 'Checkpoints'), h('div', {id: 'checkpoints', class: 'scroll-x'})),
      );
    },

    async refresh(route, current) {
      const base = `/jobs/${encodeURIComponent(route.jobId)}`;
      const [details, exceptions, checkpoints] = await settle([
        api(base),
        api(`${base}/exceptions?maxExceptions=20`),
        api(`${base}/checkpoints`),
      ]);
      const failures = [details, exceptions, checkpoints].filter((r) => !r.ok).length;
      // Backpressure per vertex, only while the job runs (it is meaningless afterwards). The
      // endpoint may be missing: any failure reads as "unknown" and does not count as one.
      const pressure = new Map();
      if (details.ok && !TERMINAL_JOB_STATES.has(str(obj(details.value).state))) {
        const ids = arr(obj(details.value).vertices)
          .map((v) => str(obj(v).id))
          .filter(Boolean);
        const answers = await settle(ids.map((vid) => api(`${base}/vertices/${encodeURIComponent(vid)}/backpressure`)));
        ids.forEach((vid, i) => pressure.set(vid, backpressureOf(answers[i])));
      }
      if (!current()) return 0;
      renderJobHeader(route.jobId, details);
      if (details.ok) {
        const model = graphModel(obj(details.value), pressure);
        const section = document.getElementById('graph-section');
        const fitWidth = section ? section.clientWidth : 0;
        if (renderIfChanged(section, model, () => buildGraph(model, fitWidth))) fitGraphText(section);
        renderIfChanged(document.getElementById('vertices-section'), model, () => renderVertices(model));
      } else {
        for (const id of ['graph-section', 'vertices-section']) {
          renderIfChanged(document.getElementById(id), {error: errorText(details.error)}, () =>
            errorBox(details.error),
          );
        }
      }
      renderSection('exceptions', exceptions, renderExceptions);
      renderSection('checkpoints', checkpoints, renderCheckpoints);
      return failures;
    },
  };

  function renderJobHeader(jid, details) {
    const page = document.getElementById('job-page');
    if (!page) return;
    const part = (name) => page.querySelector(`.job-header [data-field="${name}"]`);
    const errorEl = part('job-error');
    if (!details.ok) {
      renderIfChanged(errorEl, errorText(details.error), () => errorBox(details.error));
      return;
    }
    renderIfChanged(errorEl, null, () => []);
    const job = obj(details.value);
    const status = str(job.state) || 'UNKNOWN';
    const name = str(job.name) || '(unnamed job)';
    document.title = `rflink · ${name}`;
    part('name').textContent = name;
    const statusEl = part('status');
    statusEl.textContent = status;
    statusEl.className = `badge ${statusClass(status)}`;
    renderIfChanged(part('meta'), [jid, job['start-time'], job['end-time'], job.duration, job['job-type']], () => [
      meta('ID', h('span', {class: 'mono'}, str(job.jid) || jid)),
      meta('Type', str(job['job-type']) || DASH),
      meta('Started', fmtTime(job['start-time'])),
      meta('Ended', fmtTime(job['end-time'])),
      meta('Duration', fmtDuration(job.duration)),
    ]);
    const cancellable = !TERMINAL_JOB_STATES.has(status);
    // "Cancellation requested" is moot once the job has ended; a failure stays in view.
    let note = state.cancelNote.get(jid);
    if (note && note.ok && !cancellable) note = undefined;
    renderIfChanged(part('cancel-note'), note || null, () =>
      note ? h('span', {class: note.ok ? 'muted' : 'error-text'}, note.text) : [],
    );
    const pending = state.cancelPending.has(jid) || status === 'CANCELLING' || status === 'CANCELING';
    renderIfChanged(part('actions'), {cancellable, pending}, () =>
      cancellable
        ? h(
            'button',
            {
              id: 'cancel-job',
              type: 'button',
              class: 'danger',
              disabled: pending,
              onclick: () => cancelJob(jid),
            },
            pending ? 'Cancelling…' : 'Cancel job',
          )
        : [],
    );
  }

  function meta(label, value) {
    return h('span', {class: 'meta'}, h('span', {class: 'meta-label'}, label), value);
  }

  async function cancelJob(jid) {
    if (state.cancelPending.has(jid)) return;
    state.cancelPending.add(jid);
    state.cancelNote.delete(jid);
    const button = document.getElementById('cancel-job');
    if (button) {
      button.disabled = true;
      button.textContent = 'Cancelling…';
    }
    try {
      await api(`/jobs/${encodeURIComponent(jid)}?mode=cancel`, {method: 'PATCH'});
      state.cancelNote.set(jid, {ok: true, text: 'Cancellation requested'});
      state.fastUntil = Date.now() + FAST_REFRESH_FOR_MS;
    } catch (e) {
      state.cancelNote.set(jid, {ok: false, text: `Cancel failed: ${errorText(e)}`});
    } finally {
      state.cancelPending.delete(jid);
    }
    refreshNow();
  }

  // ---------------------------------------------------------------- backpressure

  const PRESSURE_LEVELS = ['ok', 'low', 'high'];

  function backpressureOf(result) {
    if (!result.ok) return {level: 'unknown', ratio: null};
    const b = obj(result.value);
    const level = str(b['backpressure-level']).toLowerCase();
    if (str(b.status).toLowerCase() !== 'ok' || !PRESSURE_LEVELS.includes(level)) {
      return {level: 'unknown', ratio: null};
    }
    const ratios = arr(b.subtasks)
      .map((s) => num(obj(s).ratio))
      .filter((r) => r !== null);
    return {level, ratio: ratios.length ? Math.max(...ratios) : null};
  }

  function backpressureLegend() {
    return h(
      'div',
      {class: 'legend'},
      'Backpressure:',
      ['ok', 'low', 'high', 'unknown'].map((l) => h('span', {class: `legend-item bp-${l}`}, h('i'), l)),
    );
  }

  function fmtPressure(p) {
    if (!p || p.level === 'unknown') return 'unknown';
    return p.ratio === null ? p.level : `${p.level} (${Math.round(p.ratio * 100)}%)`;
  }

  // ---------------------------------------------------------------- job graph

  /** Flink's plan node description ("Source: a<br/>+- b<br/>") as "Source: a -> b". */
  function planName(description) {
    const parts = str(description)
      .split(/<br\s*\/?>/i)
      .map((p) =>
        p
          .replace(/<[^>]*>/g, '')
          .replace(/&gt;/g, '>')
          .replace(/&lt;/g, '<')
          .replace(/&amp;/g, '&')
          .replace(/^[\s+-]*/, '')
          .trim(),
      )
      .filter(Boolean);
    return parts.join(' -> ');
  }

  /**
   * The graph to draw: one node per vertex (from `vertices`, and `plan.nodes` for any the
   * vertex list lacks), edges from `plan.nodes[].inputs`, and each node's column (its longest
   * distance from a source) and row.
   */
  function graphModel(job, pressure) {
    const nodes = new Map();
    arr(job.vertices).forEach((v, i) => {
      const id = str(obj(v).id);
      if (!id || nodes.has(id)) return;
      nodes.set(id, {
        id,
        name: str(v.name) || id,
        parallelism: num(v.parallelism),
        status: str(v.status),
        metrics: obj(v.metrics),
        tasks: obj(v.tasks),
        duration: num(v.duration),
        order: i,
        inputs: [],
      });
    });
    const planNodes = arr(obj(job.plan).nodes);
    planNodes.forEach((n, i) => {
      const id = str(obj(n).id);
      if (!id) return;
      let node = nodes.get(id);
      if (!node) {
        node = {
          id,
          name: planName(n.description) || str(n.operator) || id,
          parallelism: num(n.parallelism),
          status: '',
          metrics: {},
          tasks: {},
          duration: null,
          order: nodes.size + i,
          inputs: [],
        };
        nodes.set(id, node);
      }
      node.inputs = arr(n.inputs)
        .map(obj)
        .filter((inp) => str(inp.id))
        .map((inp) => ({
          id: str(inp.id),
          ship: str(inp.ship_strategy) || 'UNKNOWN',
          exchange: str(inp.exchange),
        }));
    });
    // Inputs from vertices the job does not list are dropped (nothing to draw them from).
    for (const node of nodes.values()) {
      node.inputs = node.inputs.filter((inp) => nodes.has(inp.id) && inp.id !== node.id);
    }
    // Column: the longest path from a source. A cycle (not expected) is cut where it closes.
    const depth = new Map();
    const visiting = new Set();
    const depthOf = (id) => {
      if (depth.has(id)) return depth.get(id);
      if (visiting.has(id)) return 0;
      visiting.add(id);
      let d = 0;
      for (const inp of nodes.get(id).inputs) d = Math.max(d, depthOf(inp.id) + 1);
      visiting.delete(id);
      depth.set(id, d);
      return d;
    };
    const columns = [];
    for (const node of nodes.values()) {
      node.column = depthOf(node.id);
      (columns[node.column] = columns[node.column] || []).push(node);
    }
    // Rows: sources in vertex order; every other column ordered by the mean row of its inputs,
    // which keeps edges short and mostly uncrossed.
    columns.forEach((column, c) => {
      if (!column) return;
      if (c > 0) {
        for (const node of column) {
          const rows = node.inputs.map((inp) => nodes.get(inp.id).row).filter((r) => r !== undefined);
          node.key = rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Infinity;
        }
      }
      column.sort((a, b) => (c > 0 ? a.key - b.key : 0) || a.order - b.order);
      column.forEach((node, row) => {
        node.row = row;
      });
    });
    return {
      columns: columns.map((column) =>
        (column || []).map((n) => ({
          id: n.id,
          name: n.name,
          parallelism: n.parallelism,
          status: n.status,
          metrics: n.metrics,
          tasks: n.tasks,
          duration: n.duration,
          inputs: n.inputs,
          pressure: pressure.get(n.id) || {level: 'unknown', ratio: null},
        })),
      ),
    };
  }

  const BOX_W = 236;
  const BOX_H = 112;
  const COL_GAP = 120;
  const ROW_GAP = 32;
  const PAD = 16;
  const TEXT_X = 12;
  // A graph up to this many times wider than its card is scaled down to fit; wider ones scroll.
  const MAX_SHRINK = 1.5;

  /**
   * The job graph as an SVG element; its text is fitted by `fitGraphText` once attached. A
   * graph somewhat wider than `fitWidth` is scaled down to fit; a much wider one scrolls.
   */
  function buildGraph(model, fitWidth) {
    if (!model.columns.flat().length) return h('p', {class: 'muted'}, 'This job has no vertices.');
    const tallest = Math.max(...model.columns.map((c) => c.length));
    const columnHeight = (n) => n * BOX_H + Math.max(0, n - 1) * ROW_GAP;
    const width = PAD * 2 + model.columns.length * BOX_W + (model.columns.length - 1) * COL_GAP;
    const height = PAD * 2 + columnHeight(tallest);
    const pos = new Map();
    model.columns.forEach((column, c) => {
      const top = PAD + (columnHeight(tallest) - columnHeight(column.length)) / 2;
      column.forEach((node, r) => {
        pos.set(node.id, {x: PAD + c * (BOX_W + COL_GAP), y: top + r * (BOX_H + ROW_GAP), node});
      });
    });
    const graph = svg('svg', {
      id: 'job-graph',
      class: fitWidth > 0 && width > fitWidth && width <= fitWidth * MAX_SHRINK ? 'fit' : null,
      xmlns: SVG_NS,
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: 'img',
      'aria-label': 'Job graph',
    });
    graph.appendChild(
      svg(
        'defs',
        {},
        svg(
          'marker',
          {
            id: 'arrow',
            viewBox: '0 0 10 10',
            refX: 10,
            refY: 5,
            markerWidth: 8,
            markerHeight: 8,
            orient: 'auto-start-reverse',
            markerUnits: 'userSpaceOnUse',
          },
          svg('path', {d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow-head'}),
        ),
      ),
    );
    const edges = svg('g', {class: 'edges'});
    const labels = svg('g', {class: 'edge-labels'});
    const boxes = svg('g', {class: 'vertices'});
    graph.append(edges, boxes, labels);

    // Edges leave a box's right side and enter the left side, spread when there are several.
    const outputs = new Map();
    for (const {node} of pos.values()) {
      for (const inp of node.inputs) outputs.set(inp.id, (outputs.get(inp.id) || 0) + 1);
    }
    const outputSeen = new Map();
    for (const {x, y, node} of pos.values()) {
      node.inputs.forEach((inp, k) => {
        const from = pos.get(inp.id);
        if (!from) return;
        const outs = outputs.get(inp.id) || 1;
        const o = outputSeen.get(inp.id) || 0;
        outputSeen.set(inp.id, o + 1);
        const sx = from.x + BOX_W;
        const sy = from.y + (BOX_H * (o + 1)) / (outs + 1);
        const tx = x;
        const ty = y + (BOX_H * (k + 1)) / (node.inputs.length + 1);
        const dx = Math.max(40, Math.abs(tx - sx) / 2);
        const d = `M ${sx} ${sy} C ${sx + dx} ${sy}, ${tx - dx} ${ty}, ${tx} ${ty}`;
        edges.appendChild(
          svg(
            'path',
            {
              class: 'edge',
              d,
              'marker-end': 'url(#arrow)',
              'data-ship-strategy': inp.ship,
              'data-source': inp.id,
              'data-target': node.id,
            },
            svg('title', {}, `${inp.ship}${inp.exchange ? ` (${inp.exchange})` : ''}`),
          ),
        );
        // A symmetric cubic's midpoint is the mean of its ends.
        const mx = (sx + tx) / 2;
        const my = (sy + ty) / 2;
        const w = inp.ship.length * 7 + 12;
        labels.appendChild(
          svg(
            'g',
            {class: 'edge-label', transform: `translate(${mx} ${my})`},
            svg('rect', {x: -w / 2, y: -9, width: w, height: 18, rx: 9}),
            svg('text', {x: 0, y: 4, 'text-anchor': 'middle'}, inp.ship),
          ),
        );
      });
    }

    for (const {x, y, node} of pos.values()) {
      boxes.appendChild(drawVertex(node, x, y));
    }
    return graph;
  }

  /** Fits the vertex names into their boxes and the edge labels' pills to their text. */
  function fitGraphText(section) {
    for (const text of section.querySelectorAll('text[data-fit]')) {
      fitLines(text, text.dataset.fit, BOX_W - TEXT_X * 2 - 4, 2, 16);
    }
    for (const label of section.querySelectorAll('g.edge-label')) {
      const text = label.querySelector('text');
      const rect = label.querySelector('rect');
      const w = textWidth(text, 7) + 14;
      rect.setAttribute('x', -w / 2);
      rect.setAttribute('width', w);
    }
  }

  /** The width of `el` (SVG text in the document), or an estimate when it cannot be measured. */
  function textWidth(el, perChar) {
    let w = 0;
    try {
      w = el.getComputedTextLength();
    } catch (_) {
      w = 0;
    }
    return w > 0 ? w : el.textContent.length * perChar;
  }

  /** Sets `el`'s text to the longest prefix of `content` that fits `maxWidth`, with "…". */
  function truncate(el, content, maxWidth) {
    el.textContent = content;
    if (textWidth(el, 7.5) <= maxWidth) return;
    let lo = 0;
    let hi = content.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      el.textContent = content.slice(0, mid).trimEnd() + '…';
      if (textWidth(el, 7.5) <= maxWidth) lo = mid;
      else hi = mid - 1;
    }
    el.textContent = content.slice(0, lo).trimEnd() + '…';
  }

  /**
   * Puts `content` into the SVG text `el` as at most `maxLines` lines of `maxWidth`, broken at
   * spaces; what does not fit ends the last line with "…". `el` must be in the document.
   */
  function fitLines(el, content, maxWidth, maxLines, lineHeight) {
    const x = el.getAttribute('x');
    const words = content.split(/\s+/).filter(Boolean);
    let i = 0;
    for (let n = 0; n < maxLines && i < words.length; n++) {
      const tspan = svg('tspan', {x, dy: n ? lineHeight : 0});
      el.appendChild(tspan);
      if (n === maxLines - 1) {
        truncate(tspan, words.slice(i).join(' '), maxWidth);
        return;
      }
      let line = words[i++];
      tspan.textContent = line;
      if (textWidth(tspan, 7.5) > maxWidth) {
        truncate(tspan, line, maxWidth);
        continue;
      }
      while (i < words.length) {
        tspan.textContent = `${line} ${words[i]}`;
        if (textWidth(tspan, 7.5) > maxWidth) break;
        line = tspan.textContent;
        i++;
      }
      tspan.textContent = line;
    }
  }

  function drawVertex(node, x, y) {
    const level = node.pressure.level;
    const m = node.metrics;
    const g = svg('g', {
      class: `vertex bp-${level}`,
      'data-vertex-id': node.id,
      'data-backpressure': level,
      transform: `translate(${x} ${y})`,
    });
    const tooltip = [
      node.name,
      `Parallelism: ${node.parallelism === null ? DASH : node.parallelism}`,
      `Status: ${node.status || DASH}`,
      `Records in: ${fmtCount(m['read-records'])}, out: ${fmtCount(m['write-records'])}`,
      `Bytes in: ${fmtBytes(m['read-bytes'])}, out: ${fmtBytes(m['write-bytes'])}`,
      `Backpressure: ${fmtPressure(node.pressure)}`,
      `ID: ${node.id}`,
    ].join('\n');
    g.appendChild(svg('title', {}, tooltip));
    g.appendChild(svg('rect', {class: 'box', width: BOX_W, height: BOX_H, rx: 8}));
    g.appendChild(svg('rect', {class: `status-bar ${statusClass(node.status)}`, width: 5, height: BOX_H - 16, x: 0, y: 8, rx: 2}));
    // The name is filled in by fitGraphText, once measurable.
    g.appendChild(svg('text', {class: 'vertex-name', x: TEXT_X + 2, y: 24, 'data-fit': node.name}));
    const line = (yy, ...parts) => g.appendChild(svg('text', {class: 'vertex-line', x: TEXT_X + 2, y: yy}, parts));
    line(
      64,
      svg('tspan', {class: 'k'}, 'Parallelism '),
      svg('tspan', {class: 'v', 'data-field': 'parallelism'}, node.parallelism === null ? DASH : String(node.parallelism)),
      svg('tspan', {class: 'k'}, '  ·  '),
      svg('tspan', {class: `v vstatus ${statusClass(node.status)}`, 'data-field': 'vertex-status'}, node.status || DASH),
    );
    line(
      82,
      svg('tspan', {class: 'k'}, 'Records in '),
      svg('tspan', {class: 'v', 'data-field': 'records-in'}, fmtCompact(m['read-records'])),
      svg('tspan', {class: 'k'}, '  out '),
      svg('tspan', {class: 'v', 'data-field': 'records-out'}, fmtCompact(m['write-records'])),
    );
    line(
      100,
      svg('tspan', {class: 'k'}, 'Backpressure '),
      svg('tspan', {class: `v bp-text-${level}`, 'data-field': 'backpressure'}, fmtPressure(node.pressure)),
    );
    return g;
  }

  /**
   * A chained vertex name ("Source: a -> b -> c") with each "part ->" kept on one line, so a
   * narrow column breaks between operators, never inside an arrow. Same text content.
   */
  function chainName(name) {
    const parts = name.split(' -> ');
    return parts.map((part, i) =>
      i < parts.length - 1 ? [h('span', {class: 'nowrap'}, `${part} ->`), ' '] : part,
    );
  }

  /** Records, with bytes below. */
  function volume(records, bytes) {
    return [
      h('div', {}, `${fmtCount(records)} records`),
      h('div', {class: 'sub muted'}, fmtBytes(bytes)),
    ];
  }

  function renderVertices(model) {
    const nodes = model.columns.flat();
    const head = [
      'Name',
      'Status',
      'Parallelism',
      'Received',
      'Sent',
      'Backpressure',
      'Duration',
      'Tasks',
    ];
    const rows = nodes.map((n) =>
      h(
        'tr',
        {'data-vertex-id': n.id},
        h('td', {class: 'vertex-name-cell'}, chainName(n.name)),
        h('td', {}, badge(n.status || 'UNKNOWN', 'vertex-status')),
        h('td', {class: 'num'}, n.parallelism === null ? DASH : String(n.parallelism)),
        h('td', {class: 'num'}, volume(n.metrics['read-records'], n.metrics['read-bytes'])),
        h('td', {class: 'num'}, volume(n.metrics['write-records'], n.metrics['write-bytes'])),
        h('td', {}, h('span', {class: `bp-text-${n.pressure.level}`}, fmtPressure(n.pressure))),
        h('td', {class: 'nowrap'}, fmtDuration(n.duration)),
        h('td', {}, taskCounts(n.tasks)),
      ),
    );
    if (!rows.length) rows.push(h('tr', {class: 'empty'}, h('td', {colspan: head.length}, 'No vertices.')));
    return h(
      'table',
      {id: 'vertices-table', class: 'table'},
      h('thead', {}, h('tr', {}, headCells(head, ['Parallelism', 'Received', 'Sent']))),
      h('tbody', {}, rows),
    );
  }

  // ---------------------------------------------------------------- exceptions

  function renderExceptions(value) {
    const history = obj(obj(value).exceptionHistory);
    const entries = arr(history.entries).map(obj);
    if (!entries.length) return h('p', {class: 'muted'}, 'No exceptions.');
    const items = entries.map((e, i) => {
      const key = `${str(e.timestamp)}|${str(e.exceptionName)}|${i}`;
      const where = [str(e.taskName), str(e.endpoint)].filter(Boolean).join(' @ ');
      const concurrent = arr(e.concurrentExceptions).length;
      return h(
        'details',
        {
          class: 'exception',
          open: state.openExceptions.has(key),
          ontoggle: (ev) => {
            if (ev.target.open) state.openExceptions.add(key);
            else state.openExceptions.delete(key);
          },
        },
        h(
          'summary',
          {},
          h('span', {class: 'nowrap muted'}, fmtTime(e.timestamp)),
          h('span', {class: 'exception-name'}, str(e.exceptionName) || 'Exception'),
          where ? h('span', {class: 'muted'}, where) : null,
          concurrent ? h('span', {class: 'pill'}, `+${concurrent} concurrent`) : null,
        ),
        h('pre', {class: 'stacktrace'}, str(e.stacktrace) || '(no stack trace)'),
      );
    });
    return [
      h('div', {class: 'exception-list'}, items),
      history.truncated ? h('p', {class: 'muted'}, 'Older exceptions are not shown.') : null,
    ];
  }

  // ---------------------------------------------------------------- checkpoints

  function renderCheckpoints(value) {
    const v = obj(value);
    const counts = obj(v.counts);
    const latest = obj(obj(v.latest).completed);
    const summary = h(
      'div',
      {class: 'stats small'},
      stat('Completed', h('span', {class: 'c-finished'}, fmtCount(counts.completed))),
      stat('In progress', fmtCount(counts.in_progress)),
      stat('Failed', h('span', {class: 'c-failed'}, fmtCount(counts.failed))),
      stat('Restored', fmtCount(counts.restored)),
      stat('Total', fmtCount(counts.total)),
      stat(
        'Latest completed',
        num(latest.id) !== null
          ? [
              `#${latest.id} `,
              h('span', {class: 'stat-note'}, fmtClockOf(latest.latest_ack_timestamp || latest.trigger_timestamp)),
            ]
          : DASH,
      ),
    );
    const history = arr(v.history).map(obj);
    const head = ['ID', 'Status', 'Trigger time', 'Duration', 'Checkpointed size', 'State size', 'Acknowledged', 'Type'];
    const rows = history.map((c) =>
      h(
        'tr',
        {'data-checkpoint-id': str(c.id)},
        h('td', {class: 'num'}, str(c.id) || DASH),
        h('td', {}, badge(c.status, 'checkpoint-status')),
        h('td', {class: 'nowrap'}, fmtTime(c.trigger_timestamp)),
        h('td', {class: 'num'}, fmtDuration(c.end_to_end_duration)),
        h('td', {class: 'num'}, fmtBytes(c.checkpointed_size)),
        h('td', {class: 'num'}, fmtBytes(c.state_size)),
        h('td', {class: 'num'}, `${fmtCount(c.num_acknowledged_subtasks)} / ${fmtCount(c.num_subtasks)}`),
        h('td', {}, c.is_savepoint ? 'savepoint' : str(c.checkpoint_type).toLowerCase() || DASH),
      ),
    );
    const table = rows.length
      ? h(
          'table',
          {id: 'checkpoints-table', class: 'table'},
          h('thead', {}, h('tr', {}, headCells(head, ['ID', 'Duration', 'Checkpointed size', 'State size', 'Acknowledged']))),
          h('tbody', {}, rows),
        )
      : h('p', {class: 'muted'}, 'No checkpoint yet.');
    return [summary, table];
  }

  // ---------------------------------------------------------------- start

  /** "rflink 0.1.0 · Flink 2.3.0 REST API" from the revision and the API version mirrored. */
  function versionText(revision, apiVersion) {
    const rev = str(revision);
    const api = `Flink ${str(apiVersion)} REST API`;
    return rev.startsWith('rflink') ? `${rev} · ${api}` : api;
  }

  const VIEWS = {overview: OverviewView, taskmanagers: TaskManagersView, job: JobView};

  async function start() {
    try {
      const config = obj(await api('/config'));
      const ms = num(config['refresh-interval']);
      if (ms !== null && ms > 0) state.refreshMs = Math.max(MIN_REFRESH_MS, ms);
      const version = document.getElementById('version');
      if (version && config['flink-version']) {
        version.textContent = versionText(config['flink-revision'], config['flink-version']);
      }
    } catch (e) {
      // Keep the default interval; the views show their own errors.
      console.warn(e);
    }
    window.addEventListener('hashchange', onRouteChange);
    onRouteChange();
  }

  start();
})();
