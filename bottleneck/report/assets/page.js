// The page's two interactive parts: the confusion matrix (a click shows the images of a cell) and the map.
(function () {
  "use strict";
  var node = document.getElementById("page-data");
  if (!node) { return; }
  var data = JSON.parse(node.textContent);

  // Names as shown: each bidirectional control (the set of page.py's BIDI) as its visible escape, so that
  // "photo\u202egpj.exe" cannot display as "photoexe.jpg". Text goes in through textContent only.
  var BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function shown(text) {
    return String(text).replace(BIDI, function (c) {
      return "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0");
    });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  }

  function figure(thumb, id, lines) {
    var f = el("figure", "img");
    if (thumb) {
      var img = el("img", "thumb");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = shown(id);
      img.src = data.thumbs + "/" + thumb;
      f.appendChild(img);
    } else {
      f.appendChild(el("div", "nothumb", "no image"));
    }
    var cap = el("figcaption");
    cap.appendChild(el("b", null, shown(id)));
    lines.forEach(function (line) {
      cap.appendChild(el("br"));
      cap.appendChild(document.createTextNode(shown(line)));
    });
    f.appendChild(cap);
    return f;
  }

  // Confusion matrix: cells hold [thumb, id, probability of the predicted class] rows.
  var panel = document.getElementById("cell-panel");
  if (panel && data.cells) {
    var grid = document.getElementById("cell-grid");
    var title = document.getElementById("cell-title");
    var buttons = document.querySelectorAll("button.cell");
    var show = function (button) {
      var t = Number(button.dataset.t), p = Number(button.dataset.p);
      var cell = data.cells[t + "," + p] || { total: 0, items: [] };
      buttons.forEach(function (b) { b.classList.remove("selected"); });
      button.classList.add("selected");
      var text = "true " + data.labels[t] + ", predicted " + data.labels[p] + ": " + cell.total + " image" +
        (cell.total === 1 ? "" : "s");
      if (cell.items.length < cell.total) {
        text += " (showing the " + cell.items.length + " least confident)";
      }
      title.textContent = shown(text);
      grid.replaceChildren.apply(grid, cell.items.map(function (r) {
        return figure(r[0], r[1], ["p(" + data.labels[p] + ") " + r[2].toFixed(3)]);
      }));
      panel.dataset.t = String(t);
      panel.dataset.p = String(p);
      panel.hidden = false;
    };
    buttons.forEach(function (b) { b.addEventListener("click", function () { show(b); }); });
  }

  // The map: one point per image, coloured by class; x marks a mistake, a red ring a suspected label error.
  var canvas = document.getElementById("map");
  if (canvas && data.map) {
    var m = data.map, ctx = canvas.getContext("2d"), pad = 10;
    var W = canvas.width - 2 * pad, H = canvas.height - 2 * pad;
    var px = function (i) { return pad + m.x[i] * W; };
    var py = function (i) { return pad + (1 - m.y[i]) * H; };
    var i;
    for (i = 0; i < m.x.length; i++) {
      ctx.fillStyle = m.colors[m.c[i] % m.colors.length];
      ctx.globalAlpha = 0.75;
      ctx.beginPath();
      ctx.arc(px(i), py(i), 2.2, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    for (i = 0; i < m.x.length; i++) {
      if (m.f[i] & 1) {
        ctx.strokeStyle = "#111";
        ctx.lineWidth = 1;
        ctx.beginPath();
        ctx.moveTo(px(i) - 3, py(i) - 3); ctx.lineTo(px(i) + 3, py(i) + 3);
        ctx.moveTo(px(i) + 3, py(i) - 3); ctx.lineTo(px(i) - 3, py(i) + 3);
        ctx.stroke();
      }
      if (m.f[i] & 2) {
        ctx.strokeStyle = "#cf222e";
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.arc(px(i), py(i), 5, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    var tip = document.getElementById("map-tip");
    canvas.addEventListener("mousemove", function (ev) {
      var r = canvas.getBoundingClientRect();
      var x = (ev.clientX - r.left) * canvas.width / r.width, y = (ev.clientY - r.top) * canvas.height / r.height;
      var best = -1, bestD = 36;
      for (var k = 0; k < m.x.length; k++) {
        var d = (px(k) - x) * (px(k) - x) + (py(k) - y) * (py(k) - y);
        if (d < bestD) { bestD = d; best = k; }
      }
      if (best < 0) { tip.hidden = true; return; }
      var flags = (m.f[best] & 1 ? ", mistake" : "") + (m.f[best] & 2 ? ", suspected label error" : "");
      tip.textContent = shown(m.id[best] + " (" + m.classes[m.c[best]] + flags + ")");
      tip.style.left = (ev.clientX - r.left + 12) + "px";
      tip.style.top = (ev.clientY - r.top + 12) + "px";
      tip.hidden = false;
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
  }
})();
