// The page: a form that starts and stops schedules, and live views of the ticks.
import { TimingChart } from "./chart.js";
import { TickerConnection } from "./connection.js";
import { LatenessFit, MAX_TICKS_SHOWN, ScheduleStats, formatClock, formatMs } from "./client-stats.js";

const $ = (id) => document.getElementById(id);
const form = $("controls");
const intervalInput = $("interval");
const countInput = $("count");
const alertBox = $("alert");
const statusBox = $("status");
const tickList = $("ticks");
const scheduleState = $("schedule-state");
const chart = new TimingChart($("chart"));

// Limits announced by the server's hello (they also set the form's min/max). The
// page has none of its own: before the first hello it cannot check a start.
let limits = null; // {min_interval, max_interval, max_count}

// `wanted`: the schedule the user asked for and has not stopped; it is resumed
// after a reconnect. `passed`: how many of its slots are behind us.
let wanted = null; // {interval, count, passed}
// Starts sent and not yet answered by `started` or `error`, oldest first: the
// server answers frames in order, and this page's stops are never refused.
let pendingStarts = []; // [{interval, count, passed, resumed}]
// `current`: the server's schedule whose ticks we are showing.
let current = null; // {id, fit, offset, lastSeq, lastArrival, skippedHere}
let stats = new ScheduleStats();

// DOM work is batched per animation frame; the queue is capped, so a hidden
// tab (no animation frames) cannot grow memory however long it runs.
let queued = [];
let summaryDirty = true;
let lastSummary = 0;

const connection = new TickerConnection(new URL("ws", location.href).href.replace(/^http/, "ws"), {
  onStatus(text, state) {
    statusBox.textContent = text;
    statusBox.dataset.state = state;
  },
  onMessage: handleMessage,
});

function showAlert(text) {
  alertBox.textContent = text;
}

function handleMessage(message) {
  switch (message.type) {
    case "hello":
      limits = message;
      intervalInput.min = String(message.min_interval);
      intervalInput.max = String(message.max_interval);
      countInput.max = String(message.max_count);
      resume();
      break;
    case "started":
      onStarted(message);
      break;
    case "tick":
      if (current !== null && message.id === current.id) onTick(message);
      break;
    case "done":
      if (current !== null && message.id === current.id) onDone(message);
      break;
    case "stopped":
      if (current !== null && message.id === current.id) {
        current = null;
        setScheduleState("stopped");
      }
      if (pendingStarts.length === 0) wanted = null; // a start answered after Stop was pressed
      break;
    case "error":
      showAlert(message.message);
      pendingStarts.shift(); // that start was refused; nothing else changed
      break;
    default:
      break; // a newer server may send types we do not know
  }
}

function start(schedule) {
  const remaining = schedule.count === null ? null : schedule.count - schedule.passed;
  const message = { type: "start", interval: schedule.interval };
  if (remaining !== null) message.count = remaining;
  if (connection.send(message)) {
    pendingStarts.push(schedule);
  } else {
    // Not connected: it goes out as soon as the server says hello.
    wanted = { interval: schedule.interval, count: schedule.count, passed: schedule.passed };
    setScheduleState("waiting for the connection");
  }
}

function resume() {
  pendingStarts = []; // sent on the old connection: never to be answered
  if (wanted === null) return;
  if (wanted.count !== null && wanted.passed >= wanted.count) {
    wanted = null;
    return;
  }
  start({ ...wanted, resumed: current !== null || wanted.passed > 0 });
}

function onStarted(message) {
  const schedule = pendingStarts.shift() ?? {
    interval: message.interval,
    count: message.count,
    passed: 0,
  };
  if (!schedule.resumed) {
    stats = new ScheduleStats();
    queued = [];
    tickList.replaceChildren();
    chart.reset(message.interval * 1000);
  }
  wanted = { interval: schedule.interval, count: schedule.count, passed: schedule.passed };
  current = {
    id: message.id,
    fit: new LatenessFit(message.interval * 1000, performance.now()),
    offset: schedule.passed,
    lastSeq: 0,
    lastArrival: null,
    skippedHere: 0,
  };
  const every = `every ${message.interval} s`;
  const total = schedule.count === null ? "unlimited" : `${schedule.count} ticks`;
  setScheduleState(`#${message.id}: ${every}, ${total}${schedule.resumed ? ", resumed" : ""}`);
  summaryDirty = true;
}

function onTick(message) {
  const now = performance.now();
  const skipped = message.seq - current.lastSeq - 1;
  if (skipped > 0) {
    stats.skipped += skipped;
    current.skippedHere += skipped;
    enqueue({ skippedFrom: current.offset + current.lastSeq + 1, skipped });
  }
  const deviation = current.fit.lateness(message.seq, now);
  stats.record(deviation);
  const gap = current.lastArrival === null ? null : now - current.lastArrival;
  chart.add(gap, Math.max(0, skipped));
  current.lastArrival = now;
  current.lastSeq = message.seq;
  if (wanted !== null) wanted.passed = current.offset + message.seq; // null once Stop is pressed
  enqueue({ seq: current.offset + message.seq, at: new Date(), deviation });
  summaryDirty = true;
}

function onDone(message) {
  const trailing = message.skipped - current.skippedHere;
  if (trailing > 0) {
    stats.skipped += trailing;
    enqueue({ skippedFrom: current.offset + current.lastSeq + 1, skipped: trailing });
  }
  wanted = null;
  current = null;
  setScheduleState(`done: ${stats.received} received, ${stats.skipped} skipped`);
  summaryDirty = true;
}

function setScheduleState(text) {
  scheduleState.textContent = `(${text})`;
}

function enqueue(item) {
  queued.push(item);
  if (queued.length > MAX_TICKS_SHOWN) queued.splice(0, queued.length - MAX_TICKS_SHOWN);
}

function renderItem(item) {
  const li = document.createElement("li");
  if (item.skipped !== undefined) {
    li.className = "skipped";
    const last = item.skippedFrom + item.skipped - 1;
    const slots = item.skipped === 1 ? `slot ${item.skippedFrom}` : `slots ${item.skippedFrom}–${last}`;
    li.textContent = `skipped ${slots} (the connection was too slow)`;
  } else {
    if (Math.abs(item.deviation) > 50) li.className = "late";
    li.append(`#${item.seq} · ${formatClock(item.at)} · `);
    const deviation = document.createElement("span");
    deviation.className = "deviation";
    deviation.textContent = formatMs(item.deviation);
    li.append(deviation);
  }
  return li;
}

function render(time) {
  if (queued.length) {
    const fragment = document.createDocumentFragment();
    for (let i = queued.length - 1; i >= 0; i -= 1) fragment.append(renderItem(queued[i]));
    queued = [];
    tickList.prepend(fragment);
    while (tickList.childElementCount > MAX_TICKS_SHOWN) tickList.lastElementChild.remove();
  }
  // The p95 sorts up to 10,000 numbers: four times a second is plenty.
  if (summaryDirty && time - lastSummary > 250) {
    $("received").textContent = String(stats.received);
    $("skipped").textContent = String(stats.skipped);
    $("mean").textContent = formatMs(stats.mean);
    $("p95").textContent = formatMs(stats.p95);
    summaryDirty = false;
    lastSummary = time;
  }
  chart.draw();
  requestAnimationFrame(render);
}

function validate() {
  const problems = [];
  if (limits === null) {
    return { problems: ["Not connected yet: try again when the status says “Connected to ticker”."] };
  }
  const interval = Number(intervalInput.value);
  const low = limits.min_interval;
  const high = limits.max_interval;
  const intervalOk = intervalInput.value.trim() !== "" && Number.isFinite(interval) && interval >= low && interval <= high;
  if (!intervalOk) problems.push(`The interval must be a number of seconds between ${low} and ${high}.`);
  intervalInput.setAttribute("aria-invalid", String(!intervalOk));

  let count = null;
  let countOk = true;
  const countText = countInput.value.trim();
  // type=number reports text it cannot parse as "" with validity.badInput set.
  if (countText !== "" || countInput.validity.badInput) {
    count = Number(countText);
    countOk = countText !== "" && Number.isInteger(count) && count >= 1 && count <= limits.max_count;
    if (!countOk) problems.push(`The count must be a whole number from 1 to ${limits.max_count}, or empty for no limit.`);
  }
  countInput.setAttribute("aria-invalid", String(!countOk));
  return { problems, interval, count };
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const { problems, interval, count } = validate();
  if (problems.length) {
    showAlert(problems.join(" "));
    return;
  }
  showAlert("");
  start({ interval, count, passed: 0, resumed: false });
});

$("stop").addEventListener("click", () => {
  showAlert("");
  wanted = null;
  if (!connection.send({ type: "stop" })) {
    current = null;
    setScheduleState("stopped");
  }
});

connection.connect();
requestAnimationFrame(render);
