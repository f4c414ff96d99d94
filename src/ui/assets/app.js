// chump dashboard: a read-only view over the REST API. No framework and no
// build step: views render HTML strings (every value escaped), patch only
// what changed (so focus and open details survive a refresh), and refresh
// themselves on a light poll while the tab is visible.
'use strict';

(() => {
  const POLL_MS = 3000;
  const PAGE = 20;
  const TOKEN_KEY = 'chump.apiToken';

  // ---- Small helpers -------------------------------------------------------

  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ESC[c]);
  const $ = (sel, root = document) => root.querySelector(sel);

  /** Sets an element's HTML only when it differs (keeps focus and state). */
  const rendered = new WeakMap();
  function patch(el, html) {
    if (rendered.get(el) !== html) {
      el.innerHTML = html;
      rendered.set(el, html);
    }
  }

  const STATES = {
    deployed: ['deployed', 'ok'],
    up_to_date: ['up to date', 'ok'],
    rolled_back: ['rolled back', 'info'],
    superseded: ['superseded', 'info'],
    failed: ['failed', 'bad'],
    degraded: ['degraded', 'warn'],
    pinned: ['pinned', 'warn'],
    suspended: ['suspended', 'idle'],
    deleting: ['deleting', 'idle'],
    deleted: ['deleted', 'idle'],
    never_checked: ['not checked yet', 'idle'],
  };
  const STATE_ORDER = ['failed', 'degraded', 'pinned', 'deployed', 'up_to_date', 'rolled_back',
    'superseded', 'suspended', 'deleting', 'never_checked'];
  const OUTCOMES = ['deployed', 'up_to_date', 'failed', 'degraded', 'superseded', 'rolled_back', 'deleted'];
  const TRIGGERS = { schedule: 'scheduled', manual: 'manual', webhook: 'push', delete: 'deletion', auto_rollback: 'automatic rollback' };

  const label = (state) => (STATES[state] || [state])[0];
  function badge(state, extra = '') {
    const [word, tone] = STATES[state] || [state, 'idle'];
    return `<span class="badge ${tone}" data-state="${esc(state)}">${esc(word)}${extra}</span>`;
  }

  /** What a source is, in one word: its last outcome unless something overrides it. */
  function stateOf(src) {
    const st = src.status || {};
    if (src.deleting) return 'deleting';
    if (src.suspended) return 'suspended';
    if (st.pinned) return 'pinned';
    return st.last_outcome || 'never_checked';
  }

  /**
   * The image the target Deployment's spec runs now. A deploy's or
   * rollback's own record keeps the image it found before (history's
   * meaning); once it succeeded, the spec runs what it applied.
   */
  function runningNow(st) {
    if ((st.last_outcome === 'deployed' || st.last_outcome === 'rolled_back') && st.desired_image) return st.desired_image;
    return st.running_image;
  }

  const short = (sha) => (sha ? `<code title="${esc(sha)}">${esc(sha.slice(0, 8))}</code>` : '<span class="muted">—</span>');

  function relative(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return '';
    const s = Math.round((t - Date.now()) / 1000);
    const a = Math.abs(s);
    const n = a < 60 ? `${a} s` : a < 3600 ? `${Math.floor(a / 60)} min` : a < 86400 ? `${Math.floor(a / 3600)} h` : `${Math.floor(a / 86400)} d`;
    if (a < 2) return 'now';
    return s > 0 ? `in ${n}` : `${n} ago`;
  }
  // One formatter for every absolute time (toLocaleString builds one per call).
  const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  const absolute = (iso) => DATE_TIME.format(new Date(iso));
  function when(iso, none = '—') {
    if (!iso) return `<span class="muted">${esc(none)}</span>`;
    // The absolute time is its title, set when first pointed at or focused.
    return `<time datetime="${esc(iso)}" data-rel>${esc(relative(iso))}</time>`;
  }
  function titleTime(ev) {
    const t = ev.target;
    if (t instanceof HTMLTimeElement && !t.title && t.dateTime) t.title = absolute(t.dateTime);
  }
  const collate = new Intl.Collator(undefined, { numeric: true }).compare;

  /** Keeps every relative time on the page current between refreshes. */
  function tickTimes() {
    for (const el of document.querySelectorAll('time[data-rel]')) {
      const text = relative(el.getAttribute('datetime'));
      if (el.textContent !== text) el.textContent = text;
    }
  }

  function nextCheck(src) {
    const st = src.status || {};
    if (src.deleting) return '<span class="muted">deleting</span>';
    if (src.suspended) return '<span class="muted">suspended</span>';
    if (st.rollback_to) return 'rollback queued';
    if (st.in_flight) return 'checking now';
    if (st.requested) return 'requested';
    if (st.next_check_at && Date.parse(st.next_check_at) <= Date.now()) return 'due';
    return when(st.next_check_at);
  }

  function announce(text) {
    const el = $('#announcer');
    el.textContent = '';
    setTimeout(() => { el.textContent = text; }, 50);
  }

  // ---- The API -------------------------------------------------------------

  class AuthNeeded extends Error {}
  class ApiFailure extends Error {
    constructor(status, body) {
      super((body && body.msg) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function api(path) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(path, { headers, cache: 'no-store' });
    if (resp.status === 401) throw new AuthNeeded(token ? 'refused' : 'needed');
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    if (!resp.ok) throw new ApiFailure(resp.status, body);
    return body;
  }

  // ---- Token prompt ----------------------------------------------------------

  let asking = null;
  /** Shows the token dialog; resolves once a token was entered. */
  function askForToken(refused) {
    if (asking) return asking;
    const dialog = $('#token-dialog');
    const error = $('#token-error');
    error.hidden = !refused;
    error.textContent = refused ? 'That token was refused. Try another.' : '';
    asking = new Promise((resolve) => {
      const form = $('#token-form');
      form.onsubmit = (ev) => {
        ev.preventDefault();
        const token = $('#token-input').value.trim();
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
        $('#token-input').value = '';
        dialog.close();
        asking = null;
        showForget();
        resolve();
      };
    });
    if (!dialog.open) dialog.showModal();
    $('#token-input').focus();
    return asking;
  }
  function showForget() {
    $('#forget-token').hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  // ---- Live status line --------------------------------------------------------

  function live(state, text) {
    const el = $('#live');
    el.dataset.state = state;
    patch($('#live-text'), text);
  }
  function updatedNow() {
    const now = new Date();
    document.documentElement.dataset.updatedAt = String(now.getTime());
    live('ok', `Live · updated <time datetime="${now.toISOString()}">${esc(now.toLocaleTimeString())}</time>`);
  }

  // ---- Routing -----------------------------------------------------------------

  function route() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const [path, query = ''] = raw.split('?');
    return { path, params: new URLSearchParams(query) };
  }
  function setParams(path, params) {
    const q = params.toString();
    history.replaceState(null, '', `#${path}${q ? `?${q}` : ''}`);
  }

  let view = null;
  let timer = null;

  async function refresh() {
    if (!view) return;
    const current = view;
    try {
      await current.refresh();
      if (current !== view) return;
      updatedNow();
      $('#main').setAttribute('aria-busy', 'false');
    } catch (err) {
      if (current !== view) return;
      if (err instanceof AuthNeeded) {
        if (err.message === 'refused') sessionStorage.removeItem(TOKEN_KEY);
        live('paused', 'Waiting for a token');
        await askForToken(err.message === 'refused');
        return refresh();
      }
      current.failed?.(err);
      live('error', `Update failed: ${esc(err.message)} · retrying`);
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (document.visibilityState === 'visible') await refresh();
      schedule();
    }, POLL_MS);
  }

  function navigate() {
    const { path, params } = route();
    const main = $('#main');
    // A new view is not loaded until its first refresh says so.
    delete main.dataset.loaded;
    const m = path.match(/^\/sources\/(\d+)$/);
    let name = 'sources';
    if (m) { view = sourceView(main, Number(m[1]), params); name = 'source'; }
    else if (path === '/history') { view = historyView(main, params); name = 'history'; }
    else view = sourcesView(main, params);
    main.dataset.view = name;
    main.setAttribute('aria-busy', 'true');
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === (name === 'source' ? 'sources' : name)) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    refresh().then(schedule);
  }

  // ---- Sources ---------------------------------------------------------------------

  function sourcesView(main, params) {
    document.title = 'Sources · chump';
    main.innerHTML = `
      <h1>Sources</h1>
      <ul class="summary" id="summary" aria-label="Sources by state"></ul>
      <form class="filters" role="search" id="filters">
        <label>Search <input type="search" id="f-q" placeholder="name, image, commit, repository" autocomplete="off"></label>
        <label>Namespace <select id="f-ns"><option value="">All namespaces</option></select></label>
        <label>State <select id="f-state"><option value="">All states</option>
          ${STATE_ORDER.map((s) => `<option value="${s}">${esc(label(s))}</option>`).join('')}</select></label>
      </form>
      <p class="count" id="count" aria-live="polite"></p>
      <div class="table-wrap"><table class="sources cards" id="sources">
        <caption class="visually-hidden">Sources, one row each</caption>
        <thead><tr><th scope="col">Source</th><th scope="col">Branch</th><th scope="col">State</th>
          <th scope="col">Running image</th><th scope="col">Commit</th><th scope="col">Last checked</th><th scope="col">Next check</th></tr></thead>
        <tbody></tbody></table></div>`;
    const q = $('#f-q', main), ns = $('#f-ns', main), stateSel = $('#f-state', main);
    q.value = params.get('q') || '';
    stateSel.value = params.get('state') || '';
    let sources = [];
    let wantedNs = params.get('namespace') || '';
    const rows = new Map();
    let first = true;

    function filters() {
      const p = new URLSearchParams();
      if (q.value) p.set('q', q.value);
      if (ns.value) p.set('namespace', ns.value);
      if (stateSel.value) p.set('state', stateSel.value);
      setParams('/', p);
      render();
    }
    q.addEventListener('input', filters);
    ns.addEventListener('change', () => { wantedNs = ns.value; filters(); });
    stateSel.addEventListener('change', filters);
    $('#filters', main).addEventListener('submit', (ev) => ev.preventDefault());
    $('#summary', main).addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-state]');
      if (!b) return;
      stateSel.value = stateSel.value === b.dataset.state ? '' : b.dataset.state;
      filters();
    });

    function rowHtml(s) {
      const st = s.status || {};
      const state = stateOf(s);
      const extra = st.in_flight || st.rollback_to ? '<span class="visually-hidden">, checking</span>' : '';
      const sub = state === 'pinned' && st.last_outcome ? `<span class="sub">last check: ${esc(label(st.last_outcome))}</span>` : '';
      const why = state === 'degraded' ? st.health_reason || st.last_message : st.last_message;
      const reason = (state === 'failed' || state === 'degraded') && why
        ? `<span class="sub reason" title="${esc(why)}">${st.last_stage ? `at ${esc(st.last_stage)}: ` : ''}${esc(why)}</span>` : '';
      return `<th scope="row"><a href="#/sources/${s.id}">${esc(s.namespace)}/${esc(s.deployment_name)}</a>
          <span class="sub">#${s.id} · ${esc(s.container_name)}</span></th>
        <td data-label="Branch">${esc(s.branch)}</td>
        <td data-label="State">${badge(state, extra)}${sub}${reason}</td>
        <td data-label="Running image" class="image">${runningNow(st) ? esc(runningNow(st)) : '<span class="muted">—</span>'}</td>
        <td data-label="Commit">${short(st.last_commit)}</td>
        <td data-label="Last checked">${when(st.last_checked_at, 'never')}</td>
        <td data-label="Next check">${nextCheck(s)}</td>`;
    }

    function matches(s, needle) {
      if (!needle) return true;
      const st = s.status || {};
      return [s.namespace, s.deployment_name, `${s.namespace}/${s.deployment_name}`, s.branch, s.git_url,
        s.container_name, runningNow(st), st.desired_image, st.last_commit, label(stateOf(s)), String(s.id)]
        .some((v) => v && String(v).toLowerCase().includes(needle));
    }

    function render() {
      const tbody = $('#sources tbody', main);
      const counts = {};
      for (const s of sources) counts[stateOf(s)] = (counts[stateOf(s)] || 0) + 1;
      patch($('#summary', main), STATE_ORDER.filter((s) => counts[s]).map((s) =>
        `<li><button type="button" data-state="${s}" aria-pressed="${stateSel.value === s}">${badge(s)} <span>${counts[s]}</span></button></li>`).join(''));

      const namespaces = [...new Set(sources.map((s) => s.namespace))].sort();
      patch(ns, `<option value="">All namespaces</option>${namespaces.map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join('')}`);
      ns.value = namespaces.includes(wantedNs) ? wantedNs : '';

      const needle = q.value.trim().toLowerCase();
      const shown = sources.filter((s) => (!ns.value || s.namespace === ns.value)
        && (!stateSel.value || stateOf(s) === stateSel.value) && matches(s, needle));
      const keep = new Set();
      if (!rows.size && shown.length) {
        // The first render: one parse for every row.
        const html = shown.map(rowHtml);
        tbody.innerHTML = shown.map((s, i) => `<tr data-id="${s.id}" data-state="${stateOf(s)}">${html[i]}</tr>`).join('');
        [...tbody.children].forEach((tr, i) => { rows.set(shown[i].id, tr); rendered.set(tr, html[i]); });
      }
      let at = tbody.firstElementChild;
      for (const s of shown) {
        keep.add(s.id);
        let row = rows.get(s.id);
        if (!row) {
          row = document.createElement('tr');
          row.dataset.id = s.id;
          rows.set(s.id, row);
        }
        row.dataset.state = stateOf(s);
        patch(row, rowHtml(s));
        if (row !== at) tbody.insertBefore(row, at);
        else at = at.nextElementSibling;
      }
      for (const [id, row] of rows) {
        if (!keep.has(id)) { row.remove(); if (!sources.some((s) => s.id === id)) rows.delete(id); }
      }
      const empty = $('tr.empty-row', tbody);
      if (!shown.length && !empty) {
        tbody.insertAdjacentHTML('beforeend', `<tr class="empty-row"><td class="empty" colspan="7">${sources.length ? 'No source matches these filters.' : 'No sources yet. Add one with <code>chump sources add</code> or <code>POST /api/sources</code>.'}</td></tr>`);
      } else if (shown.length && empty) empty.remove();
      patch($('#count', main), shown.length === sources.length
        ? `${sources.length} source${sources.length === 1 ? '' : 's'}`
        : `Showing ${shown.length} of ${sources.length} sources`);
    }

    return {
      async refresh() {
        const body = await api('/api/sources');
        if (first) performance.mark('chump:sources-fetched');
        sources = body.sources.slice().sort((a, b) => collate(a.namespace, b.namespace)
          || collate(a.deployment_name, b.deployment_name) || a.id - b.id);
        render();
        if (first) {
          first = false;
          main.dataset.loaded = 'true';
          performance.mark('chump:sources-rendered');
        }
      },
      failed(err) {
        if (first) patch($('#count', main), `<span class="callout bad">Could not load the sources: ${esc(err.message)}</span>`);
      },
    };
  }

  // ---- History entries (shared by the source page and the history page) -------------

  function entryHead(e, withSource) {
    const trigger = TRIGGERS[e.trigger] || e.trigger;
    const stage = e.outcome === 'failed' && e.stage ? ` at ${esc(e.stage)}` : '';
    return `<div class="entry-head">${badge(e.outcome)}${stage ? `<span>${stage}</span>` : ''}
      ${withSource ? `<a href="#/sources/${e.source_id}">${esc(e.namespace)}/${esc(e.deployment_name)}</a>` : ''}
      ${when(e.finished_at)}
      <span class="muted">${esc(trigger)}</span>
      ${e.commit ? short(e.commit) : ''}
      ${e.rollback_to ? `<span>to entry #${esc(e.rollback_to)}</span>` : ''}
      ${e.desired_image ? `<code class="muted">${esc(e.desired_image)}</code>` : ''}
      <span class="muted">#${e.id}</span></div>`;
  }

  function objectsHtml(objects) {
    return `<ul class="objects">${objects.map((o) => `<li><span class="action" data-action="${esc(o.action)}">${esc(o.action)}</span>
      <span>${esc(o.kind)} ${o.namespace ? `${esc(o.namespace)}/` : ''}${esc(o.name)}</span></li>`).join('')}</ul>`;
  }

  const MANIFESTS = {
    dropped: 'Its manifests were dropped by retention (CHUMP_MANIFEST_RETENTION).',
    too_large: 'Its manifests were too large to keep (CHUMP_MANIFEST_MAX_BYTES).',
  };

  function entryHtml(e, withSource) {
    const objs = e.objects || [];
    const parts = [entryHead(e, withSource)];
    if (e.message) parts.push(`<p class="message">${esc(e.message)}</p>`);
    if (objs.length) {
      parts.push(`<details class="objects-details"><summary>${objs.length} object${objs.length === 1 ? '' : 's'}</summary>${objectsHtml(objs)}</details>`);
    }
    if (e.manifests === 'kept') {
      parts.push(`<details class="diff-details" data-entry="${e.id}"><summary>Diff against the previous deploy</summary><div class="diff-body">Loading…</div></details>`);
    } else if (MANIFESTS[e.manifests]) {
      parts.push(`<p class="muted">${MANIFESTS[e.manifests]}</p>`);
    }
    return parts.join('');
  }

  function diffHtml(d) {
    if (!d.objects.length) return `<p>No object changed (${d.unchanged} the same).</p>`;
    const against = d.against ? `entry #${d.against}${d.against_commit ? ` (${esc(d.against_commit.slice(0, 8))})` : ''}` : 'nothing (the first deploy)';
    const line = (l) => {
      const cls = l.startsWith('@@') ? 'hunk' : l.startsWith('+') && !l.startsWith('+++') ? 'add' : l.startsWith('-') && !l.startsWith('---') ? 'del' : '';
      return `<span${cls ? ` class="${cls}"` : ''}>${esc(l) || ' '}</span>`;
    };
    return `<p class="muted">Against ${against}; ${d.unchanged} object${d.unchanged === 1 ? '' : 's'} unchanged.</p>
      ${d.objects.map((o) => `<section class="diff-object"><h4>${esc(o.change)} ${esc(o.kind)} ${o.namespace ? `${esc(o.namespace)}/` : ''}${esc(o.name)}</h4>
      <pre class="diff" tabindex="0" aria-label="Diff of ${esc(o.kind)} ${esc(o.name)}">${o.diff.replace(/\n$/, '').split('\n').map(line).join('')}</pre></section>`).join('')}`;
  }

  /** Loads a kept deploy's diff the first time its details open. */
  function wireDiffs(root) {
    root.addEventListener('toggle', async (ev) => {
      const d = ev.target;
      if (!(d instanceof HTMLDetailsElement) || !d.open || !d.classList.contains('diff-details') || d.dataset.loaded) return;
      d.dataset.loaded = 'loading';
      const body = $('.diff-body', d);
      try {
        body.innerHTML = diffHtml(await api(`/api/history/${d.dataset.entry}/diff`));
        d.dataset.loaded = 'true';
      } catch (err) {
        body.innerHTML = `<p class="callout bad">${esc(err.message)}</p>`;
        d.dataset.loaded = '';
      }
    }, true);
  }

  /** Renders entries into a list keyed by id; entries never change, so only new ones are built. */
  function renderEntries(list, entries, html) {
    const have = new Map([...list.children].map((li) => [li.dataset.id, li]));
    let at = list.firstElementChild;
    const keep = new Set();
    for (const e of entries) {
      const id = String(e.id);
      keep.add(id);
      let li = have.get(id);
      if (!li) {
        li = document.createElement('li');
        li.className = 'entry';
        li.dataset.id = id;
        li.dataset.outcome = e.outcome;
        li.innerHTML = html(e);
      }
      if (li !== at) list.insertBefore(li, at);
      else at = at.nextElementSibling;
    }
    for (const [id, li] of have) if (!keep.has(id)) li.remove();
  }

  // ---- One source ------------------------------------------------------------------

  function sourceView(main, id, params) {
    document.title = `Source ${id} · chump`;
    const before = params.get('before');
    main.innerHTML = `
      <p><a href="#/">← All sources</a></p>
      <div class="title"><h1 id="src-title">Source ${id}</h1><span id="src-state"></span></div>
      <div id="src-alert"></div>
      <div class="columns">
        <section class="panel" aria-labelledby="h-status"><h2 id="h-status">Status</h2><dl class="facts" id="src-status"></dl></section>
        <section class="panel" aria-labelledby="h-spec"><h2 id="h-spec">Source</h2><dl class="facts" id="src-spec"></dl></section>
      </div>
      <section aria-labelledby="h-history"><h2 id="h-history">History${before ? ' (older entries)' : ''}</h2>
        <ol class="timeline" id="src-history" aria-describedby="h-history"></ol>
        <nav class="pager" id="src-pager" aria-label="History pages"></nav></section>
      <section aria-labelledby="h-objects"><h2 id="h-objects">Objects chump applied</h2><div id="src-objects"></div></section>`;
    wireDiffs(main);
    let first = true;

    function fact(name, value) { return `<dt>${esc(name)}</dt><dd>${value}</dd>`; }

    return {
      async refresh() {
        const q = `limit=${PAGE}${before ? `&before=${encodeURIComponent(before)}` : ''}`;
        const [src, st, hist, objects] = await Promise.all([
          api(`/api/sources/${id}`),
          api(`/api/sources/${id}/status`),
          api(`/api/sources/${id}/history?${q}`),
          api(`/api/sources/${id}/objects`).catch((err) => (err instanceof ApiFailure && err.status === 404 ? null : Promise.reject(err))),
        ]);
        const s = { ...src, status: st };
        const state = stateOf(s);
        document.title = `${src.namespace}/${src.deployment_name} · chump`;
        patch($('#src-title', main), `${esc(src.namespace)}/${esc(src.deployment_name)}`);
        patch($('#src-state', main), badge(state, st.in_flight ? ' <span class="sub">checking</span>' : ''));
        main.dataset.state = state;

        const alerts = [];
        if (st.last_outcome === 'failed') {
          alerts.push(`<div class="callout bad" id="failure"><p><strong>The last check failed${st.last_stage ? ` at ${esc(st.last_stage)}` : ''}</strong>
            ${st.consecutive_failures > 1 ? `(${st.consecutive_failures} in a row)` : ''}</p><p class="message">${esc(st.last_message || '')}</p></div>`);
        } else if (st.health === 'degraded') {
          alerts.push(`<div class="callout warn" id="failure"><p><strong>Degraded</strong>: the workloads are not healthy.</p><p class="message">${esc(st.health_reason || st.last_message || '')}</p></div>`);
        }
        if (st.pinned) {
          const p = st.pinned;
          alerts.push(`<div class="callout warn" id="pin"><p><strong>Pinned</strong> away from ${short(p.commit)} since ${when(p.since)}${p.entry ? ` (by entry #${esc(p.entry)})` : ''}: ${esc(p.reason || '')}</p>
            <p>The next other commit deploys as usual; <code>chump unpin ${id}</code> clears the pin now.</p></div>`);
        }
        if (st.rollback_to) alerts.push(`<div class="callout info"><p>A rollback to entry #${esc(st.rollback_to)} is queued.</p></div>`);
        if (src.suspended) alerts.push('<div class="callout info"><p>Suspended: chump does not check this source until it is resumed.</p></div>');
        patch($('#src-alert', main), alerts.join(''));

        patch($('#src-status', main), [
          fact('State', esc(label(state))),
          fact('Last checked', when(st.last_checked_at, 'never')),
          fact('Next check', nextCheck(s)),
          fact('Last outcome', st.last_outcome ? `${esc(label(st.last_outcome))}${st.last_stage ? ` at ${esc(st.last_stage)}` : ''}` : '—'),
          fact('Health', esc(st.health || '—')),
          fact('Commit', short(st.last_commit)),
          fact('Desired image', st.desired_image ? `<code>${esc(st.desired_image)}</code>` : '—'),
          fact('Running image', runningNow(st) ? `<code>${esc(runningNow(st))}</code>` : '—'),
        ].join(''));
        patch($('#src-spec', main), [
          fact('Repository', `<code>${esc(src.git_url)}</code>`),
          fact('Branch', esc(src.branch)),
          fact('Path', `<code>${esc(src.deploy_path || '.')}</code>`),
          fact('Container', esc(src.container_name)),
          fact('Interval', src.interval_seconds ? `${esc(src.interval_seconds)} s` : 'default'),
          fact('Prune', src.prune ? 'yes' : 'no'),
          fact('Automatic rollback', src.auto_rollback === null || src.auto_rollback === undefined ? 'default' : src.auto_rollback ? 'yes' : 'no'),
          fact('Service account', src.service_account ? esc(src.service_account) : '—'),
        ].join(''));

        const list = $('#src-history', main);
        renderEntries(list, hist.history, (e) => entryHtml(e, false));
        if (!hist.history.length && !$('.empty', list)) list.innerHTML = '<li class="empty muted">Nothing recorded yet.</li>';
        else if (hist.history.length) $('.empty', list)?.remove();
        const pager = [];
        if (before) pager.push(`<a href="#/sources/${id}">Newest entries</a>`);
        if (hist.next_before) pager.push(`<a href="#/sources/${id}?before=${hist.next_before}">Older entries</a>`);
        patch($('#src-pager', main), pager.join(''));

        patch($('#src-objects', main), objects && objects.objects.length
          ? `<div class="table-wrap"><table class="cards"><caption class="visually-hidden">Objects</caption><thead><tr><th scope="col">Kind</th><th scope="col">Namespace</th><th scope="col">Name</th><th scope="col">Last changed by</th></tr></thead><tbody>
            ${objects.objects.map((o) => `<tr><td data-label="Kind">${esc(o.kind)}</td><td data-label="Namespace">${esc(o.namespace || '—')}</td><td data-label="Name">${esc(o.name)}</td><td data-label="Last changed by">${short(o.commit)}</td></tr>`).join('')}</tbody></table></div>`
          : '<p class="muted">Nothing applied yet.</p>');
        if (first) { first = false; main.dataset.loaded = 'true'; }
      },
      failed(err) {
        if (first && err instanceof ApiFailure && err.status === 404) {
          main.innerHTML = `<p><a href="#/">← All sources</a></p><h1>Source ${id}</h1><p class="callout bad">No such source.</p>`;
          main.dataset.loaded = 'true';
        }
      },
    };
  }

  // ---- Global history ----------------------------------------------------------------

  function historyView(main, params) {
    document.title = 'History · chump';
    const toLocal = (iso) => {
      const t = Date.parse(iso);
      if (Number.isNaN(t)) return '';
      const d = new Date(t - new Date(t).getTimezoneOffset() * 60000);
      return d.toISOString().slice(0, 16);
    };
    main.innerHTML = `
      <h1>History</h1>
      <form class="filters" id="h-filters" aria-label="Filter the history">
        <label>Namespace <input id="h-namespace" name="namespace" autocomplete="off"></label>
        <label>Source id <input id="h-source" name="source_id" inputmode="numeric" size="6" autocomplete="off"></label>
        <label>Outcome <select id="h-outcome" name="outcome"><option value="">Any</option>
          ${OUTCOMES.map((o) => `<option value="${o}">${esc(label(o))}</option>`).join('')}</select></label>
        <label>Since <input id="h-since" name="since" type="datetime-local"></label>
        <label>Live at <input id="h-at" name="at" type="datetime-local"></label>
        <label>Per page <select id="h-limit" name="limit">${[20, 50, 100, 200].map((n) => `<option value="${n}">${n}</option>`).join('')}</select></label>
        <button type="submit">Apply</button>
      </form>
      <div id="h-error"></div>
      <ol class="timeline" id="h-list" aria-label="History entries"></ol>
      <nav class="pager" id="h-pager" aria-label="History pages"></nav>`;
    wireDiffs(main);
    const form = $('#h-filters', main);
    $('#h-namespace', main).value = params.get('namespace') || '';
    $('#h-source', main).value = params.get('source_id') || '';
    $('#h-outcome', main).value = params.get('outcome') || '';
    $('#h-since', main).value = toLocal(params.get('since') || '');
    $('#h-at', main).value = toLocal(params.get('at') || '');
    $('#h-limit', main).value = params.get('limit') || String(PAGE);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      for (const [k, sel] of [['namespace', '#h-namespace'], ['source_id', '#h-source'], ['outcome', '#h-outcome']]) {
        const v = $(sel, main).value.trim();
        if (v) p.set(k, v);
      }
      for (const [k, sel] of [['since', '#h-since'], ['at', '#h-at']]) {
        const v = $(sel, main).value;
        if (v) p.set(k, new Date(v).toISOString().replace(/\.\d{3}Z$/, 'Z'));
      }
      const limit = $('#h-limit', main).value;
      if (limit !== String(PAGE)) p.set('limit', limit);
      location.hash = `#/history${p.toString() ? `?${p}` : ''}`;
    });

    return {
      async refresh() {
        const q = new URLSearchParams(params);
        if (!q.has('limit')) q.set('limit', String(PAGE));
        const body = await api(`/api/history?${q}`);
        patch($('#h-error', main), '');
        const list = $('#h-list', main);
        renderEntries(list, body.history, (e) => entryHtml(e, true));
        if (!body.history.length) list.innerHTML = '<li class="empty muted">No entry matches these filters.</li>';
        else $('.empty', list)?.remove();
        const pager = [];
        const base = new URLSearchParams(params);
        if (base.has('before')) { base.delete('before'); pager.push(`<a href="#/history${base.toString() ? `?${base}` : ''}">Newest entries</a>`); }
        if (body.next_before) { const p = new URLSearchParams(params); p.set('before', body.next_before); pager.push(`<a href="#/history?${p}">Older entries</a>`); }
        patch($('#h-pager', main), pager.join(''));
        main.dataset.loaded = 'true';
      },
      failed(err) {
        if (err instanceof ApiFailure && err.status === 400) {
          const errors = err.body && err.body.errors ? Object.entries(err.body.errors).map(([k, v]) => `<li><strong>${esc(k)}</strong>: ${esc(v)}</li>`).join('') : '';
          patch($('#h-error', main), `<div class="callout bad" role="alert"><p>${esc(err.message)}</p>${errors ? `<ul>${errors}</ul>` : ''}</div>`);
          main.dataset.loaded = 'true';
        }
      },
    };
  }

  // ---- Start ---------------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('#forget-token').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showForget();
      announce('Token forgotten');
      refresh();
    });
    $('#token-dialog').addEventListener('cancel', (ev) => ev.preventDefault());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') refresh();
      else live('paused', 'Paused while hidden');
    });
    window.addEventListener('hashchange', () => { navigate(); $('#main').focus({ preventScroll: true }); });
    setInterval(tickTimes, 1000);
    document.addEventListener('mouseover', titleTime);
    document.addEventListener('focusin', titleTime);
    showForget();
    navigate();
  });
})();
