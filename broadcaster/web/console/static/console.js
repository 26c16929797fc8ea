// broadcaster console: the blocked banners count down between refreshes. A file (not an
// inline script) so the pages' Content-Security-Policy can allow scripts from 'self' only.
(function () {
  "use strict";
  function start(root) {
    root.querySelectorAll(".countdown[data-until]").forEach(function (el) {
      if (el.dataset.ticking) return;
      el.dataset.ticking = "1";
      var left = parseInt(el.getAttribute("data-until"), 10) || 0;
      var timer = setInterval(function () {
        left = Math.max(0, left - 1);
        el.textContent = String(left);
        if (left === 0 || !document.body.contains(el)) clearInterval(timer);
      }, 1000);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { start(document); });
  document.addEventListener("htmx:afterSwap", function (event) { start(event.target); });
})();
