// Small behaviours htmx attributes cannot express. The CSP forbids inline scripts,
// so every handler is attached here, by delegation, and survives htmx swaps.
(function () {
  "use strict";

  // Filter selects apply at once, like the Apply button.
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches("select.autosubmit") && target.form) {
      target.form.requestSubmit();
    }
    if (target.id === "select-all") {
      document.querySelectorAll("input.select-run").forEach(function (box) {
        box.checked = target.checked;
      });
    }
  });

  // Copy buttons copy the text of the element named by data-copy.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) {
      return;
    }
    var source = document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) {
      return;
    }
    navigator.clipboard.writeText(source.textContent.trim()).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  });

  // Keep a followed log scrolled to its end while new lines arrive, unless the
  // reader scrolled up to read.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var log = event.detail.target.closest && event.detail.target.closest(".log");
    if (log) {
      log.dataset.atEnd = String(log.scrollHeight - log.scrollTop - log.clientHeight < 30);
    }
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    document.querySelectorAll(".log[data-at-end='true']").forEach(function (log) {
      log.scrollTop = log.scrollHeight;
    });
  });
})();
