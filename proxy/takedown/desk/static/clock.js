// Live deadline clocks for the desk (progressive enhancement: the server already rendered
// each clock's text; this only keeps it counting). Each <time class="clock" data-due-in="S">
// holds the seconds left when the page was rendered, measured on the server's clock, so a
// browser whose own clock is off still counts correctly.
"use strict";
(function () {
  var loaded = Date.now();
  function fmt(s) {
    var a = Math.abs(s);
    if (a < 60) return a.toFixed(a < 10 ? 1 : 0) + " s";
    if (a < 3600) return Math.floor(a / 60) + " min " + String(Math.floor(a % 60)).padStart(2, "0") + " s";
    if (a < 86400) return Math.floor(a / 3600) + " h " + String(Math.floor((a % 3600) / 60)).padStart(2, "0") + " min";
    return Math.floor(a / 86400) + " d " + Math.floor((a % 86400) / 3600) + " h";
  }
  function tick() {
    var elapsed = (Date.now() - loaded) / 1000;
    var clocks = document.querySelectorAll("time.clock[data-due-in]");
    for (var i = 0; i < clocks.length; i++) {
      var left = parseFloat(clocks[i].getAttribute("data-due-in")) - elapsed;
      clocks[i].textContent = left < 0 ? "overdue by " + fmt(left) : fmt(left) + " left";
      clocks[i].classList.toggle("overdue", left < 0);
      clocks[i].setAttribute("data-live", "1");
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
  });
})();
