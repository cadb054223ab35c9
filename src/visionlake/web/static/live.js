// Live page: one EventSource on /api/live/stream; each "frame" event carries a camera's newest
// processed frame (camera, frame_id, captured_at, time). The page swaps that camera's <img> src.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root) return;
  var state = document.getElementById("live-state");
  var params = new URLSearchParams();
  if (root.dataset.model) params.set("model", root.dataset.model);
  if (root.dataset.modelVersion) params.set("model_version", root.dataset.modelVersion);

  function imageUrl(frameId) {
    var p = new URLSearchParams(params);
    p.set("boxes", "1");
    p.set("w", "640");
    return "/image/" + encodeURIComponent(frameId) + ".jpg?" + p.toString();
  }

  function card(camera) {
    var cards = root.querySelectorAll("figure.live-cam");
    for (var i = 0; i < cards.length; i++) {
      if (cards[i].dataset.camera === camera) return cards[i];
    }
    var empty = document.getElementById("live-empty");
    if (empty) empty.remove();
    var fig = document.createElement("figure");
    fig.className = "live-cam";
    fig.dataset.camera = camera;
    var img = document.createElement("img");
    img.alt = "newest frame of " + camera;
    var cap = document.createElement("figcaption");
    var b = document.createElement("b");
    b.textContent = camera;
    var t = document.createElement("span");
    t.className = "time";
    var a = document.createElement("a");
    a.className = "fid";
    a.appendChild(document.createElement("code"));
    cap.append(b, " ", t, " ", a);
    fig.append(img, cap);
    root.appendChild(fig);
    return fig;
  }

  function show(item) {
    var fig = card(item.camera);
    if (fig.dataset.frameId === item.frame_id) return;
    fig.dataset.frameId = item.frame_id;
    fig.querySelector("img").src = imageUrl(item.frame_id);
    fig.querySelector(".time").textContent = item.time;
    var a = fig.querySelector("a.fid");
    a.href = "/frames/" + encodeURIComponent(item.frame_id);
    a.querySelector("code").textContent = item.frame_id.slice(0, 12);
    fig.classList.remove("flash");
    void fig.offsetWidth;  // restart the highlight animation
    fig.classList.add("flash");
  }

  var source = new EventSource("/api/live/stream?" + params.toString());
  source.addEventListener("open", function () {
    state.className = "dot on";
    state.title = "connected";
  });
  source.addEventListener("frame", function (e) {
    show(JSON.parse(e.data));
  });
  source.addEventListener("problem", function (e) {
    state.className = "dot warn";
    state.title = JSON.parse(e.data).error;
  });
  source.addEventListener("error", function () {
    state.className = "dot off";
    state.title = "reconnecting";
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
