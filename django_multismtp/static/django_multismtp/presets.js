/* Provider presets: fill host, port and security and show the caveat as soon as a preset is
   chosen. Without this script the form still works: the preset is applied on submit. */
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    var data = document.getElementById("multismtp-presets");
    var select = document.querySelector("select[name='preset']");
    if (!data || !select) { return; }
    var presets = JSON.parse(data.textContent);
    var caveat = document.getElementById("multismtp-caveat");
    function field(name) { return document.querySelector("[name='" + name + "']"); }
    select.addEventListener("change", function () {
      var p = presets[select.value];
      if (caveat) { caveat.textContent = p ? p.caveat : ""; }
      if (!p) { return; }
      field("host").value = p.host;
      field("port").value = p.port;
      if (field("security")) { field("security").value = p.security; }
      var user = field("username");
      if (user) {
        var apikey = p.username_hint === "apikey";
        // "apikey" is SendGrid's literal user name: set it, or take it back for another provider.
        if (apikey && !user.value) { user.value = "apikey"; }
        if (!apikey && user.value === "apikey") { user.value = ""; }
        // The hint of the chosen provider only, not one left over from an earlier choice.
        user.placeholder = apikey ? "" : (p.username_hint || "");
      }
    });
  });
})();
