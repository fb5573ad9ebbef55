// facepose's page: plain JavaScript over the public API (POST /v1/render, POST /v1/faces).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("form");
  const fileInput = $("file");
  const drop = $("drop");
  const status = $("status");
  const runButton = $("run");
  const apiKey = $("api-key");
  const options = $("options");
  const overlay = $("overlay");
  const overlayFigure = $("overlay-figure");
  const posesBody = document.querySelector("#poses tbody");
  const posesCaption = $("poses-caption");
  const json = $("json");
  const video = $("video");
  const cameraStart = $("camera-start");
  const cameraCapture = $("camera-capture");
  const cameraStop = $("camera-stop");
  const cameraNote = $("camera-note");

  const KEY_STORAGE = "facepose.apiKey";
  const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp"];
  let current = null; // the Blob last chosen, dropped or captured
  let overlayUrl = null;
  let stream = null;

  apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
  apiKey.addEventListener("change", () => sessionStorage.setItem(KEY_STORAGE, apiKey.value));

  function say(message, isError = false) {
    status.textContent = message;
    status.classList.toggle("error", isError);
  }

  function query() {
    const params = new URLSearchParams();
    for (const name of ["fx", "fy", "cx", "cy"]) {
      const value = $(name).value.trim();
      if (value !== "") params.set(name, value);
    }
    return params;
  }

  function headers(blob) {
    const out = { "Content-Type": IMAGE_TYPES.includes(blob.type) ? blob.type : "application/octet-stream" };
    if (apiKey.value.trim()) out["X-API-Key"] = apiKey.value.trim();
    return out;
  }

  // The service's error shape: {"error": {"code", "message"}}.
  async function failure(response) {
    let detail = `${response.status} ${response.statusText}`;
    let code = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        detail = `${body.error.message} (${body.error.code})`;
        code = body.error.code;
      }
    } catch (_) { /* not JSON: keep the status line */ }
    const error = new Error(detail);
    error.status = response.status;
    error.code = code;
    return error;
  }

  // The codes that say the photo itself is the problem; any other refusal (an option, the
  // key, the service's load) is said as the service said it.
  const IMAGE_ERRORS = ["empty_image", "unsupported_image", "corrupt_image", "image_too_large"];

  async function post(path, params, blob) {
    const response = await fetch(`${path}?${params}`, { method: "POST", headers: headers(blob), body: blob });
    if (!response.ok) throw await failure(response);
    return response;
  }

  // Arrays of plain values on one line: a mesh's numbers stay readable.
  function pretty(value) {
    return JSON.stringify(value, null, 2).replace(
      /\[\s+([^\[\]{}]*?)\s+\]/g, (_, inner) => `[${inner.split(/,\s+/).join(", ")}]`);
  }

  function fixed(value, digits = 1) {
    return typeof value === "number" ? value.toFixed(digits) : "";
  }

  function showFaces(body) {
    const image = body.images[0];
    posesBody.replaceChildren();
    if (image.error) {
      posesCaption.textContent = `No faces: ${image.error.message}`;
      return 0;
    }
    image.faces.forEach((face, index) => {
      const row = document.createElement("tr");
      const angles = face.pose.euler_deg;
      const visible = face.visibility ? face.visibility.vertices : null;
      const cells = [
        String(index + 1),
        fixed(face.score, 2),
        fixed(angles.yaw),
        fixed(angles.pitch),
        fixed(angles.roll),
        `±${fixed(face.pose.uncertainty_deg)}`,
        fixed(face.pose.translation_mm[2], 0),
        visible ? `${visible.filter(Boolean).length} of ${visible.length}` : "",
      ];
      cells.forEach((text, column) => {
        const cell = document.createElement(column === 0 ? "th" : "td");
        if (column === 0) cell.scope = "row";
        cell.textContent = text;
        row.append(cell);
      });
      posesBody.append(row);
      const expression = strongest(face.blendshapes);
      if (expression) {
        // A line of its own under the face's numbers: the table stays as wide as before.
        const line = document.createElement("tr");
        line.className = "expression";
        const cell = document.createElement("td");
        cell.colSpan = cells.length;
        cell.textContent = `Expression: ${expression}`;
        line.append(cell);
        posesBody.append(line);
      }
    });
    const count = image.faces.length;
    posesCaption.textContent = `${count} ${count === 1 ? "face" : "faces"} in a ${image.width}×${image.height} image (camera: ${image.camera.source})`;
    return count;
  }

  // The three strongest blendshapes, e.g. "jawOpen 0.82, eyeBlinkLeft 0.40"; "_neutral" says
  // nothing a reader needs.
  function strongest(blendshapes) {
    if (!blendshapes) return "";
    return Object.entries(blendshapes)
      .filter(([name]) => name !== "_neutral")
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([name, score]) => `${name} ${fixed(score, 2)}`)
      .join(", ");
  }

  async function run(blob) {
    if (!blob) {
      say("Choose a photo first.", true);
      fileInput.focus();
      return;
    }
    current = blob;
    runButton.disabled = true;
    say("Working…");
    const params = query();
    const renderParams = new URLSearchParams(params);
    renderParams.set("include", $("draw").value);
    renderParams.set("format", "jpeg");
    const facesParams = new URLSearchParams(params);
    facesParams.set("include", "visibility,blendshapes");
    try {
      const [rendered, faces] = await Promise.all([
        post("/v1/render", renderParams, blob).then((r) => r.blob()),
        post("/v1/faces", facesParams, blob).then((r) => r.json()),
      ]);
      if (overlayUrl) URL.revokeObjectURL(overlayUrl);
      overlayUrl = URL.createObjectURL(rendered);
      const count = showFaces(faces);
      overlay.alt = `The photo with ${count} ${count === 1 ? "face" : "faces"} drawn: boxes, meshes and head axes.`;
      overlay.src = overlayUrl;
      overlayFigure.hidden = false;
      json.textContent = pretty(faces);
      say(`Done: ${count} ${count === 1 ? "face" : "faces"} found.`);
    } catch (error) {
      // The previous photo's result is not this one's: cleared, so it cannot be taken for it.
      if (overlayUrl) URL.revokeObjectURL(overlayUrl);
      overlayUrl = null;
      overlay.removeAttribute("src");
      overlay.alt = "";
      overlayFigure.hidden = true;
      posesBody.replaceChildren();
      posesCaption.textContent = IMAGE_ERRORS.includes(error.code)
        ? `No faces: this photo could not be read: ${error.message}`
        : `No result: ${error.message || String(error)}`;
      json.textContent = "";
      say(error.message || String(error), true);
      if (error.status === 401) {
        options.open = true;
        apiKey.focus();
      }
    } finally {
      runButton.disabled = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(fileInput.files[0] || current);
  });
  fileInput.addEventListener("change", () => {
    if (fileInput.files[0]) run(fileInput.files[0]);
  });

  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("dragging"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) run(file);
  });

  // The webcam: only where the browser offers it (a secure context: https or localhost).
  function setCamera(on) {
    cameraStart.hidden = on;
    cameraCapture.hidden = !on;
    cameraStop.hidden = !on;
    video.hidden = !on;
  }

  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) {
    cameraStart.disabled = true;
    cameraNote.hidden = false;
    cameraNote.textContent = "The webcam needs a secure page (https or localhost) in a browser that allows it.";
  }

  cameraStart.addEventListener("click", async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
      video.srcObject = stream;
      await video.play();
      setCamera(true);
      cameraCapture.focus();
    } catch (error) {
      say(`The webcam is not available: ${error.message || error.name}`, true);
    }
  });

  function stopCamera() {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    video.srcObject = null;
    setCamera(false);
  }

  cameraStop.addEventListener("click", () => {
    stopCamera();
    cameraStart.focus();
  });

  cameraCapture.addEventListener("click", () => {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => run(blob), "image/jpeg", 0.92);
  });

  document.documentElement.dataset.ready = "true";
})();
