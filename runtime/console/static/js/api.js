// The admin API (twinflow.v1.AdminService) in Connect's JSON form, the
// session, and the live feed of server-sent events. Application pages
// import this module too.

let session = null;

// login sends the browser to the login page, to come back here.
export function login() {
  const next = location.pathname + location.search + location.hash;
  location.assign("/ui/login?next=" + encodeURIComponent(next));
}

// getSession returns the session: its CSRF token and the application pages.
export async function getSession() {
  if (!session) {
    const r = await fetch("/ui/session", { credentials: "same-origin" });
    if (r.status === 401) {
      login();
      throw new Error("not logged in");
    }
    if (!r.ok) throw new Error("reading the session: " + r.status + " " + (await r.text()));
    session = await r.json();
  }
  return session;
}

// ApiError is an error the admin API answered with.
export class ApiError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// call calls an AdminService method with a request object (protobuf JSON:
// lowerCamelCase fields) and returns the response object. 64-bit integers
// come back as strings: see num.
export async function call(method, request = {}) {
  const s = await getSession();
  const r = await fetch("/twinflow.v1.AdminService/" + method, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1", "X-Twinflow-CSRF": s.csrf },
    body: JSON.stringify(request),
  });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401 || body.code === "unauthenticated") {
    session = null;
    login();
  }
  if (!r.ok) throw new ApiError(body.code || String(r.status), body.message || r.statusText);
  return body;
}

// logout ends the session.
export async function logout() {
  const s = await getSession();
  await fetch("/ui/logout", { method: "POST", credentials: "same-origin", headers: { "X-Twinflow-CSRF": s.csrf } });
  session = null;
  location.assign("/ui/login");
}

// live calls onSample with each platform sample as it comes (once a
// second), and onState with "on" or "off" as the stream connects and
// drops. It returns a function that stops it.
export function live(onSample, onState = () => {}) {
  const es = new EventSource("/ui/events");
  es.addEventListener("sample", (e) => onSample(JSON.parse(e.data)));
  es.onopen = () => onState("on");
  es.onerror = () => onState("off");
  return () => es.close();
}

// num reads a number of the JSON form, where 64-bit integers are strings
// and zero values are left out.
export function num(v) {
  return v === undefined || v === null ? 0 : Number(v);
}

// bytesOf decodes a base64 bytes field.
export function bytesOf(b64) {
  if (!b64) return new Uint8Array();
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// textOf shows bytes as text when they are UTF-8, else as hex.
export function textOf(b64) {
  const b = bytesOf(b64);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(b);
  } catch {
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
  }
}

// pretty indents a JSON document, or returns it as it is.
export function pretty(json) {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}
