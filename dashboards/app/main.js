// The shoplake dashboards: every panel is a named report (GET /v1/reports/NAME) or one of the two
// live endpoints (/v1/live/pulse, /v1/pipeline), drawn with Apache ECharts. The filters live in
// the URL (#/page?from=…&to=…&channel=…) so that a view can be shared. No framework: each page is
// a function that lays out panels and fills each one as its answer arrives.

const echarts = window.echarts;

// What the browser tests read: ready once every panel of the page has its data or its error.
const status = { ready: false, page: null, errors: [], loadMs: null };
window.__dashboards = status;

let session = null; // {user, role, csrf}
let catalogue = {}; // report name → its entry in GET /v1/reports
let currency = 'USD'; // the reporting currency, from /v1/pipeline
let hasLive = false; // whether this process runs the stage (and so serves /v1/live/pulse)
let freshness = null; // how complete the reports' period is, from their answers' headers
let charts = [];
let timers = [];
let generation = 0; // bumped on every render, so that a slow answer of an old view is dropped

// ---------------------------------------------------------------------------------------------
// Formatting

const nf = (opts) => new Intl.NumberFormat('en-US', opts);
const fmtInt = nf({ maximumFractionDigits: 0 });
const fmtDec = nf({ maximumFractionDigits: 2 });
const fmtPct = nf({ style: 'percent', maximumFractionDigits: 1 });
const fmtMoney = () => nf({ style: 'currency', currency, maximumFractionDigits: 0 });
const fmtMoneyCents = () => nf({ style: 'currency', currency, maximumFractionDigits: 2 });
const num = (v) => (v === null || v === undefined || v === '' ? null : Number(v));

const FORMATS = {
  int: (v) => fmtInt.format(v),
  dec: (v) => fmtDec.format(v),
  pct: (v) => fmtPct.format(v),
  money: (v) => fmtMoney().format(v),
  cents: (v) => fmtMoneyCents().format(v),
};

// How a column is shown, from its name.
function columnFormat(name) {
  if (/rate|retention|share|conversion/.test(name)) return 'pct';
  if (/revenue|value|amount|spend|monetary|total|aov|lifetime|discount/.test(name)) return 'money';
  if (/cost_per|average_order/.test(name)) return 'cents';
  if (/^orders_|average|score|frequency|days|roas/.test(name)) return 'dec';
  return 'int';
}

function show(value, format) {
  const n = num(value);
  if (n === null || Number.isNaN(n)) return value === null || value === undefined ? '—' : String(value);
  return FORMATS[format](n);
}

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
};

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.method && options.method !== 'GET' && session) headers['X-CSRF-Token'] = session.csrf;
  if (options.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(options.json);
  }
  const res = await fetch(path, { ...options, headers, credentials: 'same-origin' });
  if (res.ok && res.headers.has('X-Shoplake-Complete-Until')) {
    freshness = { until: res.headers.get('X-Shoplake-Complete-Until'), late: res.headers.get('X-Shoplake-Late-Days') || '' };
  }
  const body = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 401 && !path.startsWith('/v1/session')) {
    showSignIn('Your session has ended: sign in again.');
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

// The URL of a report with the filters it declares, and `extra` (which wins).
function reportUrl(name, f, extra = {}) {
  const declared = new Set((catalogue[name]?.params || []).map((p) => p.name));
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...f, ...extra })) {
    if (v !== '' && v !== null && v !== undefined && declared.has(k)) q.set(k, v);
  }
  return `/v1/reports/${name}?${q}`;
}

const report = (name, f, extra) => api(reportUrl(name, f, extra)).then((a) => a.rows);

// ---------------------------------------------------------------------------------------------
// Filters in the URL

const FILTERS = ['from', 'to', 'channel', 'campaign', 'device', 'country'];
const isoDay = (d) => d.toISOString().slice(0, 10);
const daysAgo = (n) => { const d = new Date(); d.setUTCDate(d.getUTCDate() - n); return isoDay(d); };

function presetRange(preset) {
  const now = new Date();
  if (preset === 'month') return [isoDay(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1))), isoDay(now)];
  if (preset === 'last_month') {
    return [isoDay(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1))),
      isoDay(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 0)))];
  }
  const n = Number(preset);
  return [daysAgo(n - 1), isoDay(now)];
}

function route() {
  const [path, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const params = new URLSearchParams(query);
  const f = {};
  for (const k of FILTERS) f[k] = params.get(k) || '';
  if (!f.from || !f.to) [f.from, f.to] = presetRange('30');
  return { page: PAGES[path] ? path : 'overview', f };
}

function go(page, f) {
  const q = new URLSearchParams();
  for (const k of FILTERS) if (f[k]) q.set(k, f[k]);
  location.hash = `#/${page}?${q}`;
}

async function fillFilterOptions(f) {
  const form = document.getElementById('filters');
  const range = { from: f.from, to: f.to };
  await Promise.all(['channel', 'campaign', 'device', 'country'].map(async (by) => {
    const select = form.elements[by];
    let values = [];
    try {
      values = (await report('acquisition', range, { by })).map((r) => r.dimension).filter((d) => d && d !== '(none)');
    } catch { /* the panels show the error */ }
    if (f[by] && !values.includes(f[by])) values.push(f[by]);
    select.replaceChildren(el('option', { value: '' }, 'all'), ...values.sort().map((v) => el('option', { value: v }, v)));
    select.value = f[by];
  }));
}

function setFilterForm(f) {
  const form = document.getElementById('filters');
  for (const k of FILTERS) if (form.elements[k]) form.elements[k].value = f[k];
  form.elements.preset.value = '';
}

// ---------------------------------------------------------------------------------------------
// Panels, charts, tables

function panel(main, title, sub, cls = '') {
  const body = el('div', { class: 'body' }, el('div', { class: 'state' }, 'Loading…'));
  const tools = el('div', { class: 'tools' });
  const card = el('section', { class: `card panel ${cls}` }, el('h3', {}, title), sub ? el('p', { class: 'sub' }, sub) : null, body, tools);
  main.append(card);
  return { card, body, tools, title };
}

function empty(p, message) {
  p.body.replaceChildren(el('div', { class: 'state', 'data-empty': 'true' }, message));
}

function failed(p, e) {
  status.errors.push(`${p.title}: ${e.message}`);
  p.body.replaceChildren(el('div', { class: 'state error', 'data-error': 'true' }, `Could not load: ${e.message}`));
}

// Fills panel `p` with what `work` draws; its errors become the panel's error state.
async function fill(p, work) {
  const mine = generation;
  try {
    await work(p, () => mine === generation);
  } catch (e) {
    if (mine === generation) failed(p, e);
  }
}

function chart(p, id, option, height) {
  const div = el('div', { class: 'chart', 'data-chart': id });
  if (height) div.style.height = `${height}px`;
  p.body.replaceChildren(div);
  const c = echarts.init(div, null, { renderer: 'svg' });
  c.setOption({ animation: false, textStyle: { fontFamily: 'system-ui, sans-serif' }, ...option });
  charts.push(c);
  return c;
}

const moneyAxis = () => ({ type: 'value', name: currency, minInterval: 1, axisLabel: { formatter: (v) => fmtInt.format(v) } });
const tooltipMoney = (v) => fmtMoneyCents().format(v);

function table(p, name, url, rows, columns, opts = {}) {
  const cols = columns || Object.keys(rows[0] || {});
  let sortBy = null;
  let desc = true;
  const wrap = el('div', { class: 'table-wrap' });
  const draw = () => {
    const sorted = sortBy === null ? rows : [...rows].sort((a, b) => {
      const x = a[sortBy]; const y = b[sortBy];
      const c = (num(x) !== null && !Number.isNaN(num(x)) && num(y) !== null && !Number.isNaN(num(y)))
        ? num(x) - num(y) : String(x ?? '').localeCompare(String(y ?? ''));
      return desc ? -c : c;
    });
    const head = el('tr', {}, cols.map((c) => {
      const numeric = rows.some((r) => typeof r[c] === 'number');
      return el('th', {
        class: `${numeric ? 'num' : ''} ${sortBy === c ? (desc ? 'sorted-desc' : 'sorted-asc') : ''}`,
        'data-column': c,
        onclick: () => { desc = sortBy === c ? !desc : true; sortBy = c; draw(); },
      }, c.replaceAll('_', ' '));
    }));
    const body = sorted.slice(0, opts.max || 500).map((r) => el('tr', {}, cols.map((c) => {
      const v = r[c];
      const numeric = typeof v === 'number';
      return el('td', { class: numeric ? 'num' : '', 'data-value': v ?? '' },
        numeric ? show(v, (opts.formats || {})[c] || columnFormat(c)) : (v === undefined || v === null ? '—' : String(v)));
    })));
    wrap.replaceChildren(el('table', { 'data-table': name }, el('thead', {}, head), el('tbody', {}, body)));
  };
  draw();
  p.body.replaceChildren(wrap);
  if (url) {
    const csv = url.includes('?') ? `${url}&format=csv` : `${url}?format=csv`;
    p.tools.replaceChildren(el('a', { href: csv, download: `${name}.csv`, 'data-csv': name }, 'Download CSV'),
      el('span', { class: 'muted' }, `${rows.length} rows`));
  }
}

// A panel that is one report's table (or its empty state).
function reportTable(p, name, f, { extra = {}, empty: emptyText, table: tableName = name, columns = null, options = {} }) {
  return fill(p, async (q, current) => {
    const url = reportUrl(name, f, extra);
    const rows = (await api(url)).rows;
    if (!current()) return;
    if (!rows.length) return empty(q, emptyText);
    table(q, tableName, url, rows, columns, options);
  });
}

function switcher(p, options, current, onPick) {
  const box = el('div', { class: 'switch', role: 'group' }, options.map(([value, label]) => el('button', {
    type: 'button',
    class: value === current ? 'on' : '',
    'data-switch': value,
    onclick: () => {
      for (const b of box.children) b.classList.toggle('on', b.dataset.switch === value);
      onPick(value);
    },
  }, label)));
  p.card.insertBefore(box, p.body);
  return box;
}

// A line per series over days: rows of {day, dimension, [measure]}.
function seriesByDimension(rows, measure) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const dims = [...new Set(rows.map((r) => r.dimension))];
  const index = new Map(rows.map((r) => [`${r.day}|${r.dimension}`, num(r[measure])]));
  return {
    days,
    series: dims.map((d) => ({ name: d, data: days.map((day) => index.get(`${day}|${d}`) ?? 0) })),
  };
}

// ---------------------------------------------------------------------------------------------
// Pages

const KPIS = [
  ['sessions', 'Sessions', 'int'],
  ['shoppers', 'Shoppers', 'int'],
  ['orders', 'Orders', 'int'],
  ['conversion_rate', 'Conversion', 'pct'],
  ['revenue', 'Revenue', 'money'],
  ['average_order_value', 'Average order value', 'cents'],
];

async function overview(main, f) {
  const tiles = el('div', { class: 'kpis' });
  main.append(tiles);
  const kp = { body: tiles, title: 'KPIs', card: tiles, tools: el('div') };
  const byChannel = panel(main, 'Revenue by channel, per day', `Orders completed in the sessions of each day, in ${currency}, by first-touch channel`, 'wide');
  const sessions = panel(main, 'Sessions by channel, per day', 'Non-bot sessions by the UTC day they started', 'wide');
  await Promise.all([
    fill(kp, async (_, current) => {
      const [rows, days] = await Promise.all([report('overview', f), report('trend', f, { by: 'none' })]);
      if (!current()) return;
      const row = rows[0] || {};
      tiles.replaceChildren(...KPIS.map(([key, label, format]) => {
        const value = num(row[key]);
        const before = num(row[`${key}_previous`]);
        const change = value !== null && before ? (value - before) / Math.abs(before) : null;
        // Conversion has no daily series in the trend report (it counts orders, not sessions
        // with one): its tile has no sparkline rather than a different figure.
        const spark = key === 'conversion_rate' || !days.length ? el('div', { class: 'spark' })
          : el('div', { class: 'spark', 'data-chart': `spark-${key}` });
        const tile = el('div', { class: 'card kpi', 'data-kpi': key, 'data-value': value ?? '' },
          el('div', { class: 'label' }, label),
          el('div', { class: 'value' }, value === null ? '—' : show(value, format)),
          el('div', { class: `delta ${change === null ? '' : change >= 0 ? 'up' : 'down'}` },
            change === null ? 'no previous period to compare' : `${change >= 0 ? '▲' : '▼'} ${fmtPct.format(Math.abs(change))} vs previous ${before === null ? '' : show(before, format)}`),
          spark);
        return tile;
      }));
      for (const [key] of KPIS) {
        const div = tiles.querySelector(`[data-chart="spark-${key}"]`);
        if (!div) continue;
        const values = days.map((d) => {
          if (key === 'conversion_rate') return null;
          if (key === 'average_order_value') return num(d.orders) ? num(d.revenue) / num(d.orders) : null;
          return num(d[key]);
        });
        const c = echarts.init(div, null, { renderer: 'svg' });
        c.setOption({
          animation: false, grid: { left: 0, right: 0, top: 2, bottom: 2 },
          xAxis: { type: 'category', show: false, data: days.map((d) => d.day) },
          yAxis: { type: 'value', show: false, scale: true },
          tooltip: { trigger: 'axis', valueFormatter: (v) => (v === null ? '—' : show(v, KPIS.find((k) => k[0] === key)[2])) },
          series: [{ type: 'line', data: values, showSymbol: false, lineStyle: { width: 1.5 }, areaStyle: { opacity: 0.12 } }],
        });
        charts.push(c);
      }
    }),
    fill(byChannel, async (p, current) => {
      const rows = await report('trend', f, { by: 'channel' });
      if (!current()) return;
      if (!rows.length) return empty(p, 'No sessions in this period');
      const revenue = seriesByDimension(rows, 'revenue');
      chart(p, 'revenue-by-channel', {
        tooltip: { trigger: 'axis', valueFormatter: tooltipMoney },
        legend: { type: 'scroll', bottom: 0 },
        grid: { left: 60, right: 16, top: 30, bottom: 50 },
        xAxis: { type: 'category', data: revenue.days },
        yAxis: moneyAxis(),
        series: revenue.series.map((s) => ({ ...s, type: 'bar', stack: 'revenue' })),
      });
      const sess = seriesByDimension(rows, 'sessions');
      chart(sessions, 'sessions-by-channel', {
        tooltip: { trigger: 'axis' },
        legend: { type: 'scroll', bottom: 0 },
        grid: { left: 50, right: 16, top: 30, bottom: 50 },
        xAxis: { type: 'category', data: sess.days },
        yAxis: { type: 'value', name: 'sessions' },
        series: sess.series.map((s) => ({ ...s, type: 'line', showSymbol: sess.days.length < 3 })),
      });
    }).then(() => { if (sessions.body.querySelector('.state')?.textContent === 'Loading…') empty(sessions, 'No sessions in this period'); }),
  ]);
}

const MODELS = [
  ['last_touch', 'Last touch'], ['first_touch', 'First touch'], ['last_non_direct', 'Last non-direct'],
  ['linear', 'Linear'], ['position_based', 'Position-based'], ['time_decay', 'Time decay'],
];

async function acquisition(main, f) {
  const table1 = panel(main, 'Acquisition', `Sessions, shoppers, conversion, revenue (${currency}) and AOV against the previous period`, 'wide');
  const attribution = panel(main, 'Campaigns by attribution model', 'Orders, new customers and revenue credited to each campaign over a 30-day lookback across a shopper\'s sessions; ROAS, cost per order and CAC (spend / new customers) where spend is loaded', 'wide');
  const attributionChart = panel(main, 'Revenue credited per campaign', `${currency}, by the chosen model`);
  const trends = panel(main, 'Sessions per channel, per day', 'Non-bot sessions by first-touch channel');
  const promotions = panel(main, 'Promotions', 'Promotion views → clicks → orders, and the revenue of those orders');
  const coupons = panel(main, 'Coupons', `Orders with each coupon, the discount given and the average order value (${currency}), beside orders without one`);
  let by = 'campaign';
  const drawAcquisition = () => reportTable(table1, 'acquisition', f, { extra: { by }, empty: 'No sessions in this period', columns: ['dimension', 'sessions', 'shoppers', 'new_shoppers', 'returning_shoppers', 'orders', 'conversion_rate', 'revenue', 'average_order_value', 'sessions_previous', 'orders_previous', 'revenue_previous'] });
  switcher(table1, [['campaign', 'Campaign'], ['channel', 'Channel'], ['source_medium', 'Source / medium'], ['landing_page', 'Landing page'], ['device', 'Device'], ['country', 'Country']], by, (v) => { by = v; drawAcquisition(); });
  let model = 'last_touch';
  let attributionRows = null;
  const drawModel = () => {
    const rows = attributionRows.map((r) => {
      const orders = num(r[`orders_${model}`]);
      const revenue = num(r[`revenue_${model}`]);
      const spend = num(r.spend);
      const newCustomers = num(r[`new_customers_${model}`]);
      return {
        campaign: r.dimension, orders, new_customers: newCustomers, revenue, spend,
        roas: spend ? revenue / spend : null,
        cost_per_order: spend && orders ? spend / orders : null,
        cac: spend && newCustomers ? spend / newCustomers : null,
      };
    });
    const url = reportUrl('attribution', f, { by: 'campaign' });
    table(attribution, 'attribution', url, rows, ['campaign', 'orders', 'new_customers', 'revenue', 'spend', 'roas', 'cost_per_order', 'cac'], { formats: { orders: 'dec', new_customers: 'dec', cac: 'cents', roas: 'dec' } });
    if (!rows.some((r) => r.spend !== null)) {
      attribution.tools.append(el('span', { class: 'muted' }, 'No spend loaded for these days: shoplake load spend FILE'));
    }
    const top = [...rows].sort((a, b) => b.revenue - a.revenue).slice(0, 12).reverse();
    chart(attributionChart, 'attribution-revenue', {
      tooltip: { trigger: 'axis', valueFormatter: tooltipMoney },
      grid: { left: 120, right: 20, top: 10, bottom: 30 },
      xAxis: moneyAxis(),
      yAxis: { type: 'category', data: top.map((r) => r.campaign) },
      series: [{ type: 'bar', name: MODELS.find((m) => m[0] === model)[1], data: top.map((r) => r.revenue) }],
    });
  };
  switcher(attribution, MODELS, model, (v) => { model = v; if (attributionRows?.length) drawModel(); });
  await Promise.all([
    drawAcquisition(),
    fill(attribution, async (p, current) => {
      attributionRows = await report('attribution', f, { by: 'campaign' });
      if (!current()) return;
      if (!attributionRows.length) {
        empty(attributionChart, 'No orders in this period');
        return empty(p, 'No orders in this period');
      }
      drawModel();
    }),
    reportTable(promotions, 'promotions', f, { empty: 'No promotion was seen in this period' }),
    reportTable(coupons, 'coupons', f, { empty: 'No orders in this period' }),
    fill(trends, async (p, current) => {
      const rows = await report('trend', f, { by: 'channel' });
      if (!current()) return;
      if (!rows.length) return empty(p, 'No sessions in this period');
      const s = seriesByDimension(rows, 'sessions');
      chart(p, 'channel-trends', {
        tooltip: { trigger: 'axis' }, legend: { type: 'scroll', bottom: 0 },
        grid: { left: 50, right: 16, top: 20, bottom: 50 },
        xAxis: { type: 'category', data: s.days }, yAxis: { type: 'value', name: 'sessions' },
        series: s.series.map((x) => ({ ...x, type: 'line', showSymbol: s.days.length < 3 })),
      });
    }),
  ]);
}

async function funnel(main, f) {
  const chartPanel = panel(main, 'Funnel', 'Sessions reaching each step, and the share of the first step that got there', 'wide');
  const steps = panel(main, 'Drop-off per step', 'Sessions lost at each step and conversion from the step before', 'wide');
  const abandonment = panel(main, 'Abandoned carts and checkouts', `Sessions that added to cart or started checkout without ordering, the value left behind (${currency}) and how many came back within 7 days`, 'wide');
  let by = 'none';
  const draw = () => fill(chartPanel, async (p, current) => {
    const url = reportUrl('funnel', f, { by });
    const rows = (await api(url)).rows;
    if (!current()) return;
    if (!rows.length || !rows.some((r) => num(r.sessions) > 0)) {
      empty(steps, 'No sessions in this period');
      return empty(p, 'No sessions in this period');
    }
    const dims = [...new Set(rows.map((r) => r.dimension))];
    const names = [...new Set(rows.map((r) => r.step_name))];
    if (by === 'none') {
      chart(p, 'funnel', {
        tooltip: { trigger: 'item', formatter: (x) => `${x.name}: ${fmtInt.format(x.value)} sessions (${fmtPct.format(x.data.share)} of the first step)` },
        series: [{
          type: 'funnel', sort: 'none', left: '8%', width: '65%', minSize: '8%',
          label: { formatter: (x) => `${x.name.replaceAll('_', ' ')}  ${fmtInt.format(x.value)} (${fmtPct.format(x.data.share)})` },
          data: rows.map((r) => ({ name: r.step_name, value: num(r.sessions), share: num(r.conversion_from_start) })),
        }],
      }, 340);
    } else {
      chart(p, 'funnel', {
        tooltip: { trigger: 'axis', valueFormatter: (v) => fmtPct.format(v) },
        legend: { type: 'scroll', bottom: 0 },
        grid: { left: 60, right: 16, top: 20, bottom: 50 },
        xAxis: { type: 'category', data: names.map((n) => n.replaceAll('_', ' ')) },
        yAxis: { type: 'value', name: 'of first step', axisLabel: { formatter: (v) => fmtPct.format(v) } },
        series: dims.map((d) => ({ name: d, type: 'bar', data: names.map((n) => num(rows.find((r) => r.dimension === d && r.step_name === n)?.conversion_from_start) ?? 0) })),
      }, 340);
    }
    table(steps, 'funnel', url, rows);
  });
  switcher(chartPanel, [['none', 'All sessions'], ['channel', 'By channel'], ['device', 'By device']], by, (v) => { by = v; draw(); });
  await Promise.all([
    draw(),
    reportTable(abandonment, 'abandonment', f, { empty: 'No carts in this period' }),
  ]);
}

async function products(main, f) {
  const top = panel(main, 'Top products by revenue', `${currency}, orders placed in the period`);
  const categories = panel(main, 'Categories', `Revenue (${currency}) and add-to-cart rate per category`);
  const productTable = panel(main, 'Products', 'Views, add-to-cart and purchase rates, units, revenue, returns and ratings', 'wide');
  const together = panel(main, 'Bought together', 'Each product\'s strongest neighbours bought in the same order (from product_affinity)', 'wide');
  const searches = panel(main, 'Top searches', 'Searches, clicks, conversion and revenue per query');
  const noClick = panel(main, 'Searches without a click', 'Queries whose results got no click: what shoppers did not find');
  const stock = panel(main, 'Out of stock', 'Products out of stock in the period: hours without stock, the views and adds to cart they missed, and days of cover left at the current sales rate', 'wide');
  await Promise.all([
    fill(productTable, async (p, current) => {
      const url = reportUrl('products', f, { by: 'product' });
      const rows = (await api(url)).rows;
      if (!current()) return;
      if (!rows.length) { empty(top, 'No product views in this period'); return empty(p, 'No product views in this period'); }
      table(p, 'products', url, rows);
      const best = [...rows].sort((a, b) => num(b.revenue) - num(a.revenue)).slice(0, 10).reverse();
      chart(top, 'top-products', {
        tooltip: { trigger: 'axis', valueFormatter: tooltipMoney },
        grid: { left: 80, right: 20, top: 10, bottom: 30 },
        xAxis: moneyAxis(), yAxis: { type: 'category', data: best.map((r) => r.dimension) },
        series: [{ type: 'bar', name: 'revenue', data: best.map((r) => num(r.revenue)) }],
      });
    }),
    fill(categories, async (p, current) => {
      const rows = await report('products', f, { by: 'category' });
      if (!current()) return;
      if (!rows.length) return empty(p, 'No product views in this period');
      chart(p, 'categories', {
        tooltip: { trigger: 'axis' }, legend: { bottom: 0 },
        grid: { left: 60, right: 60, top: 30, bottom: 60 },
        xAxis: { type: 'category', data: rows.map((r) => r.dimension), axisLabel: { rotate: 30 } },
        yAxis: [moneyAxis(), { type: 'value', name: 'add to cart', axisLabel: { formatter: (v) => fmtPct.format(v) } }],
        series: [
          { type: 'bar', name: 'revenue', data: rows.map((r) => num(r.revenue)), tooltip: { valueFormatter: tooltipMoney } },
          { type: 'line', name: 'add-to-cart rate', yAxisIndex: 1, data: rows.map((r) => num(r.add_to_cart_rate)), tooltip: { valueFormatter: (v) => fmtPct.format(v) } },
        ],
      });
    }),
    reportTable(together, 'bought_together', f, { extra: { relation: 'bought_together', top: 3 }, empty: 'No product_affinity yet (shoplake batch affinity, or wait for up\'s schedule)' }),
    reportTable(searches, 'search', f, { empty: 'No searches in this period', columns: ['query', 'searches', 'click_rate', 'conversion_rate', 'revenue'] }),
    reportTable(noClick, 'search', f, { extra: { no_click_only: 'true' }, empty: 'Every search got a click in this period', table: 'search_no_click', columns: ['query', 'searches', 'without_click', 'click_rate'] }),
    reportTable(stock, 'inventory', f, { extra: { out_of_stock_only: 'true' }, empty: 'No product was out of stock in this period (or the warehouse sends no stock levels)', table: 'inventory', columns: ['product_id', 'category', 'stock_level', 'stock_outs', 'hours_out_of_stock', 'views_out_of_stock', 'adds_out_of_stock', 'units_sold', 'days_of_cover'] }),
  ]);
}

async function customers(main, f) {
  const cohorts = panel(main, 'Monthly cohorts: retention', 'Share of each month\'s new shoppers active again N months later', 'wide');
  const rfm = panel(main, 'RFM segments', `Buyers and revenue (${currency}) per recency / frequency / monetary segment`);
  const ltv = panel(main, 'Repeat purchase and lifetime value by first channel', `Per the channel of each shopper\'s first session; lifetime value in ${currency} per shopper`);
  await Promise.all([
    fill(cohorts, async (p, current) => {
      const url = reportUrl('cohorts', f);
      const rows = (await api(url)).rows;
      if (!current()) return;
      if (!rows.length) return empty(p, 'No first sessions in this period');
      const names = [...new Set(rows.map((r) => r.cohort))].sort();
      const months = [...new Set(rows.map((r) => num(r.month_number)))].sort((a, b) => a - b);
      chart(p, 'cohorts', {
        tooltip: { formatter: (x) => `cohort ${names[x.value[1]]}, month ${months[x.value[0]]}: ${fmtPct.format(x.value[2])} retained` },
        grid: { left: 90, right: 20, top: 10, bottom: 60 },
        xAxis: { type: 'category', name: 'months since first session', nameLocation: 'middle', nameGap: 28, data: months },
        yAxis: { type: 'category', data: names },
        visualMap: { min: 0, max: 1, calculable: true, orient: 'horizontal', left: 'center', bottom: 0, itemHeight: 120, formatter: (v) => fmtPct.format(v) },
        series: [{
          type: 'heatmap',
          label: { show: true, formatter: (x) => fmtPct.format(x.value[2]) },
          data: rows.map((r) => [months.indexOf(num(r.month_number)), names.indexOf(r.cohort), num(r.retention)]),
        }],
      }, Math.max(220, 60 + names.length * 34));
      p.tools.replaceChildren(el('a', { href: `${url}&format=csv`, download: 'cohorts.csv', 'data-csv': 'cohorts' }, 'Download CSV'));
    }),
    fill(rfm, async (p, current) => {
      const url = reportUrl('rfm', f);
      const rows = (await api(url)).rows;
      if (!current()) return;
      if (!rows.length) return empty(p, 'No orders in this period');
      chart(p, 'rfm', {
        tooltip: { trigger: 'axis' }, legend: { bottom: 0 },
        grid: { left: 60, right: 60, top: 30, bottom: 60 },
        xAxis: { type: 'category', data: rows.map((r) => r.segment), axisLabel: { rotate: 20 } },
        yAxis: [{ type: 'value', name: 'buyers' }, moneyAxis()],
        series: [
          { type: 'bar', name: 'buyers', data: rows.map((r) => num(r.buyers)) },
          { type: 'bar', name: 'revenue', yAxisIndex: 1, data: rows.map((r) => num(r.revenue)), tooltip: { valueFormatter: tooltipMoney } },
        ],
      });
      p.tools.replaceChildren(el('a', { href: `${url}&format=csv`, download: 'rfm.csv', 'data-csv': 'rfm' }, 'Download CSV'));
    }),
    reportTable(ltv, 'lifetime_value', f, { empty: 'No shoppers in this period' }),
  ]);
}

async function live(main) {
  const minutes = panel(main, 'The last 60 minutes', 'Events and orders per minute, from the streaming stage (seconds old, not the lake)', 'wide');
  const revenue = panel(main, 'Revenue per minute', `${currency}, orders completed`, 'wide');
  const top = panel(main, 'Top products now', 'Views, add-to-carts and orders over the last hour');
  const trending = panel(main, 'Trending', 'Products whose views per minute in the last 10 minutes grew most against the 50 before');
  const refresh = async () => {
    await fill(minutes, async (p, current) => {
      if (!hasLive) {
        for (const q of [p, revenue, top, trending]) empty(q, 'This server runs no streaming stage (shoplake query): the Live page needs shoplake up');
        return;
      }
      const pulse = await api('/v1/live/pulse');
      if (!current()) return;
      currency = pulse.currency || currency;
      const labels = pulse.minutes.map((m) => m.minute.slice(11, 16));
      const reuse = (q, id, option) => {
        const existing = q.body.querySelector(`[data-chart="${id}"]`);
        if (existing) echarts.getInstanceByDom(existing).setOption(option);
        else chart(q, id, option);
      };
      reuse(p, 'live-minutes', {
        tooltip: { trigger: 'axis' }, legend: { bottom: 0 },
        grid: { left: 50, right: 50, top: 30, bottom: 50 },
        xAxis: { type: 'category', data: labels },
        yAxis: [{ type: 'value', name: 'events' }, { type: 'value', name: 'orders' }],
        series: [
          { type: 'line', name: 'events', showSymbol: false, data: pulse.minutes.map((m) => m.events) },
          { type: 'bar', name: 'orders', yAxisIndex: 1, data: pulse.minutes.map((m) => m.orders) },
        ],
      });
      reuse(revenue, 'live-revenue', {
        tooltip: { trigger: 'axis', valueFormatter: tooltipMoney },
        grid: { left: 60, right: 20, top: 20, bottom: 30 },
        xAxis: { type: 'category', data: labels }, yAxis: moneyAxis(),
        series: [{ type: 'bar', name: 'revenue', data: pulse.minutes.map((m) => m.revenue) }],
      });
      if (pulse.top_products.length) table(top, 'live_top_products', null, pulse.top_products, ['product_id', 'name', 'views', 'adds', 'orders', 'revenue']);
      else empty(top, 'No product views in the last hour');
      if (pulse.trending.length) table(trending, 'live_trending', null, pulse.trending, ['product_id', 'name', 'views_recent', 'views_before', 'lift'], { formats: { lift: 'dec' } });
      else empty(trending, 'Nothing trending in the last 10 minutes');
      const total = pulse.minutes.reduce((a, m) => a + m.events, 0);
      p.tools.replaceChildren(el('span', { class: 'muted' }, `${fmtInt.format(total)} events in the last hour, as of ${pulse.as_of.slice(11, 19)} UTC; refreshed every 5 s`));
    });
  };
  await refresh();
  if (hasLive) timers.push(setInterval(refresh, 5000));
}

async function fraud(main, f) {
  if (!['analyst', 'admin'].includes(session.role)) {
    main.append(el('section', { class: 'card panel wide', 'data-denied': 'true' }, el('h3', {}, 'Fraud operations'),
      el('p', {}, 'This page needs the analyst or admin role: it shows orders and the shoppers behind them.')));
    return;
  }
  const daily = panel(main, 'Decisions per day', 'Orders scored by the live fraud engine, by verdict', 'wide');
  const rules = panel(main, 'Rule hits', 'How often each rule fired (enforced and shadow), and how many of those orders were later refunded', 'wide');
  const queue = panel(main, 'Review queue', 'Orders sent to review, highest score first, with the rules that fired', 'wide');
  await Promise.all([
    fill(daily, async (p, current) => {
      const rows = await report('fraud_daily', f);
      if (!current()) return;
      if (!rows.length) return empty(p, 'No decisions in this period');
      const days = [...new Set(rows.map((r) => r.day))].sort();
      chart(p, 'fraud-daily', {
        tooltip: { trigger: 'axis' }, legend: { bottom: 0 },
        grid: { left: 50, right: 16, top: 20, bottom: 50 },
        xAxis: { type: 'category', data: days }, yAxis: { type: 'value', name: 'orders' },
        color: ['#12805c', '#f08c00', '#c92a2a'],
        series: ['allow', 'review', 'block'].map((d) => ({
          name: d, type: 'bar', stack: 'v', data: days.map((day) => num(rows.find((r) => r.day === day && r.decision === d)?.decisions) ?? 0),
        })),
      });
    }),
    fill(rules, async (p, current) => {
      const url = reportUrl('fraud_rules', f);
      const rows = (await api(url)).rows;
      if (!current()) return;
      if (!rows.length) return empty(p, 'No rule fired in this period');
      table(p, 'fraud_rules', url, rows.map((r) => ({ ...r, refunded_rate: num(r.orders) ? num(r.later_refunded) / num(r.orders) : null })));
    }),
    reportTable(queue, 'fraud_review_queue', f, { empty: 'No order waiting for review in this period', options: { max: 300 } }),
  ]);
}

async function pipeline(main, f) {
  const health = panel(main, 'Pipeline', 'What an operator checks when a number looks wrong: the stream stage, compaction and the tables', 'wide');
  const tables = panel(main, 'Tables', 'Each Delta table\'s version, files and size', 'wide');
  const bad = panel(main, 'Bad rows by reason', 'Inputs refused in the period, by reason and field', 'wide');
  const examples = ['analyst', 'admin'].includes(session.role)
    ? panel(main, 'The latest bad input of each reason', 'What the storefront sent, as received (first 500 characters)', 'wide') : null;
  const refresh = async () => {
    await fill(health, async (p, current) => {
      const state = await api('/v1/pipeline');
      if (!current()) return;
      const s = state.stage;
      const c = state.compaction;
      const tile = (key, label, value) => el('div', { class: 'card kpi', 'data-kpi': key, 'data-value': value ?? '' },
        el('div', { class: 'label' }, label), el('div', { class: 'value' }, value === null || value === undefined ? '—' : String(value)));
      const age = c.age_seconds === null ? null : c.age_seconds < 120 ? `${c.age_seconds} s` : `${Math.round(c.age_seconds / 60)} min`;
      p.body.replaceChildren(el('div', { class: 'kpis' },
        tile('events_per_second', 'Events / s (last minute)', s?.events_per_second === null || !s ? null : fmtDec.format(s.events_per_second)),
        tile('lag_ms', 'Stream lag', s ? `${fmtInt.format(s.lag_ms)} ms` : null),
        tile('records_read', 'Records read', s ? fmtInt.format(s.records_read) : null),
        tile('bad_rows', 'Bad rows', s ? fmtInt.format(s.bad_rows) : null),
        tile('duplicates', 'Duplicates dropped', s ? fmtInt.format(s.duplicates) : null),
        tile('compaction_age', 'Last compaction', age === null ? null : `${age} ago`)));
      p.tools.replaceChildren(el('span', { class: 'muted' }, s ? `As of ${state.as_of}; refreshed every 10 s` : 'This server runs no streaming stage (shoplake query): only the lake is shown'));
      table(tables, 'tables', null, state.tables.map((t) => ({ ...t, size: t.bytes })), ['name', 'delta_version', 'files', 'bytes', 'last_commit']);
    });
  };
  await Promise.all([
    refresh(),
    reportTable(bad, 'bad_rows', f, { empty: 'No bad rows in this period' }),
    examples && reportTable(examples, 'bad_row_examples', f, { empty: 'No bad rows in this period' }),
  ]);
  timers.push(setInterval(refresh, 10000));
}

const PAGES = {
  overview: ['Overview', overview],
  acquisition: ['Acquisition & campaigns', acquisition],
  funnel: ['Funnel & abandonment', funnel],
  products: ['Products & search', products],
  customers: ['Customers', customers],
  live: ['Live', live],
  fraud: ['Fraud operations', fraud],
  pipeline: ['Pipeline health', pipeline],
};

// ---------------------------------------------------------------------------------------------
// The app

function nav(current) {
  const links = Object.entries(PAGES)
    .filter(([key]) => key !== 'fraud' || ['analyst', 'admin'].includes(session.role))
    .map(([key, [label]]) => {
      const { f } = route();
      const q = new URLSearchParams();
      for (const k of FILTERS) if (f[k]) q.set(k, f[k]);
      return el('a', { href: `#/${key}?${q}`, class: key === current ? 'active' : '', 'data-page': key }, label);
    });
  document.getElementById('nav').replaceChildren(...links);
}

let lastRange = null;

async function render() {
  if (!session) return;
  const started = performance.now();
  generation += 1;
  for (const t of timers) clearInterval(t);
  timers = [];
  for (const c of charts) c.dispose();
  charts = [];
  status.ready = false;
  status.errors = [];
  const { page, f } = route();
  status.page = page;
  nav(page);
  setFilterForm(f);
  const main = document.getElementById('page');
  const [title, draw] = PAGES[page];
  main.replaceChildren(el('h2', { class: 'page-title' }, title),
    el('p', { class: 'page-note' }, `${f.from} to ${f.to} (UTC)${['channel', 'campaign', 'device', 'country'].filter((k) => f[k]).map((k) => ` · ${k} ${f[k]}`).join('')}`));
  document.title = `${title} · shoplake`;
  const mine = generation;
  const range = `${f.from}|${f.to}`;
  const newRange = range !== lastRange;
  lastRange = range;
  freshness = null;
  await draw(main, f);
  if (freshness && mine === generation) {
    // Days whose figures changed after the day ended: named when few, counted when many.
    const late = freshness.late ? freshness.late.split(',').map((x) => x.split('=')) : [];
    const events = late.reduce((a, [, n]) => a + Number(n), 0);
    const lateText = late.length === 0 ? ''
      : late.length <= 3 ? ` · late events arrived for ${late.map(([d, n]) => `${d} (${n})`).join(', ')}`
        : ` · ${late.length} days received ${fmtInt.format(events)} events after they ended (latest ${late[late.length - 1][0]})`;
    main.querySelector('.page-note').append(el('span', {
      class: 'freshness', 'data-freshness': freshness.until, title: freshness.late.replaceAll(',', '\n'),
    }, ` · data compacted until ${freshness.until.replace('T', ' ').replace('Z', ' UTC')}`, lateText));
  }
  // The filters' choices after the panels, so that they do not compete with them for the
  // query service's turns.
  if (newRange && mine === generation) await fillFilterOptions(f);
  if (mine === generation) {
    status.loadMs = Math.round(performance.now() - started);
    status.ready = true;
  }
}

function showSignIn(message = '') {
  session = null;
  status.ready = false;
  document.getElementById('app').hidden = true;
  document.getElementById('signin').hidden = false;
  document.getElementById('signin-error').textContent = message;
}

async function start() {
  try {
    session = await api('/v1/session');
  } catch {
    showSignIn();
    return;
  }
  const list = await api('/v1/reports');
  catalogue = Object.fromEntries(list.reports.map((r) => [r.name, r]));
  const process = await api('/v1/pipeline');
  currency = process.currency || currency;
  hasLive = process.live;
  document.getElementById('signin').hidden = true;
  document.getElementById('app').hidden = false;
  document.getElementById('who').textContent = `${session.user} (${session.role})`;
  lastRange = null;
  await render();
}

document.getElementById('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  const error = document.getElementById('signin-error');
  error.textContent = '';
  try {
    await api('/v1/session', { method: 'POST', json: { user: form.elements.user.value, password: form.elements.password.value } });
    form.elements.password.value = '';
    await start();
  } catch (err) {
    error.textContent = err.message;
  }
});

document.getElementById('signout').addEventListener('click', async () => {
  try { await api('/v1/session', { method: 'DELETE' }); } catch { /* signed out either way */ }
  showSignIn('Signed out.');
});

document.getElementById('filters').addEventListener('change', (e) => {
  if (e.target.name === 'preset' && e.target.value) {
    const [from, to] = presetRange(e.target.value);
    e.currentTarget.elements.from.value = from;
    e.currentTarget.elements.to.value = to;
  }
});

document.getElementById('filters').addEventListener('submit', (e) => {
  e.preventDefault();
  const form = e.target;
  const f = {};
  for (const k of FILTERS) f[k] = form.elements[k]?.value || '';
  go(route().page, f);
});

window.addEventListener('hashchange', render);
window.addEventListener('resize', () => charts.forEach((c) => c.resize()));
start();
