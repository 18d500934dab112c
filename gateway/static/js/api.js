// REST client: JSON in and out, the bearer token from sessionStorage, a token prompt on 401.

const TOKEN_KEY = "gateway.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * Trades the token for the gateway's read cookie, or drops the cookie when there is no token:
 * <video> and <img> cannot send an Authorization header when reads need auth.
 */
export async function syncSession() {
  const token = getToken();
  try {
    await fetch("/api/v1/session", {
      method: token ? "POST" : "DELETE",
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      credentials: "same-origin",
    });
  } catch {
    // offline: the next token change or page load tries again
  }
}

let pendingPrompt = null;

/**
 * Shows the token dialog once (concurrent callers share it); resolves with the new token, or
 * with "" when the user cancels.
 */
export function promptToken(reason = "") {
  if (pendingPrompt) return pendingPrompt;
  const dialog = document.getElementById("token-dialog");
  const form = dialog.querySelector("form");
  const input = dialog.querySelector("input[name=token]");
  const why = dialog.querySelector(".token-reason");
  why.textContent = reason;
  input.value = "";
  const opener = document.activeElement;
  pendingPrompt = new Promise((resolve) => {
    const done = (token) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      pendingPrompt = null;
      if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
      resolve(token);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      setToken(token);
      window.dispatchEvent(new CustomEvent("tokenchange"));
      done(token);
    };
    const onClose = () => done(getToken());
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    input.focus();
  });
  return pendingPrompt;
}

function headers(extra = {}) {
  const result = { Accept: "application/json, text/html", ...extra };
  const token = getToken();
  if (token) result.Authorization = `Bearer ${token}`;
  return result;
}

async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message);
}

/** fetch + JSON (or text); on 401 asks for a token and tries again (until the user cancels). */
export async function request(method, path, body = undefined, as = "json") {
  for (;;) {
    const init = { method, headers: headers() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      const token = await promptToken("The gateway asks for an access token.");
      if (token) continue;
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    return as === "text" ? response.text() : response.json();
  }
}

export const api = {
  jobs: (limit = 100) => request("GET", `/api/v1/jobs?limit=${limit}`),
  job: (id) => request("GET", `/api/v1/jobs/${encodeURIComponent(id)}`),
  cancel: (id) => request("POST", `/api/v1/jobs/${encodeURIComponent(id)}/cancel`),
  logs: (id, after = 0) => request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/logs?after=${after}&limit=1000`),
  submitPaths: (inputs, label, options) => request("POST", "/api/v1/jobs", { inputs, label, options }),
  services: () => request("GET", "/api/v1/services"),
  downloads: (limit = 200) => request("GET", `/api/v1/downloads?limit=${limit}`),
  pollDownloads: () => request("POST", "/api/v1/downloads/poll"),
  confirmDownload: (id) => request("POST", `/api/v1/downloads/${encodeURIComponent(id)}/confirm`),
  retryDownload: (id) => request("POST", `/api/v1/downloads/${encodeURIComponent(id)}/retry`),
  system: () => request("GET", "/api/v1/system"),
  videoPath: (id, index, rest) => `/api/v1/jobs/${encodeURIComponent(id)}/videos/${index}/${rest}`,
  videoJson: (id, index, kind) => request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/videos/${index}/${kind}`),
};

/**
 * Multipart upload with progress (XMLHttpRequest: fetch cannot report upload progress).
 * Resolves with the created job; on 401 asks for a token and sends again.
 */
export function upload(formData, onProgress) {
  const send = () => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/jobs");
    xhr.setRequestHeader("Accept", "application/json");
    const token = getToken();
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, (body && body.error && body.error.message) || `${xhr.status} ${xhr.statusText}`));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "The upload failed (network error).")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "The upload was aborted.")));
    xhr.send(formData);
  });
  return (async () => {
    for (;;) {
      try {
        return await send();
      } catch (error) {
        if (error.status === 401 && await promptToken("Uploading needs an access token.")) continue;
        throw error;
      }
    }
  })();
}
