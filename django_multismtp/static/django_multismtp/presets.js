/* Provider presets: fill host, port, security and the login method, and show the caveat, as
   soon as a preset is chosen. An OAuth preset (Microsoft 365, Google) chooses OAuth 2.0
   (XOAUTH2) and shows the OAuth section (or, before the first save, a note saying where it
   will be); a password preset takes an OAuth method back to Automatic. Without this script
   the form still works: the preset is applied on submit (forms.AccountFormMixin.clean, the
   same rules). */
(function () {
  "use strict";
  var BEARER = ["xoauth2", "oauthbearer"];
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    var data = document.getElementById("multismtp-presets");
    var select = document.querySelector("select[name='preset']");
    if (!data || !select) { return; }
    var presets = JSON.parse(data.textContent);
    var caveat = document.getElementById("multismtp-caveat");
    var note = document.getElementById("multismtp-oauth-note");
    function field(name) { return document.querySelector("[name='" + name + "']"); }
    function rows(name) {
      // The admin's and "My SMTP settings"' field rows (a password is not used by OAuth).
      return document.querySelectorAll(".form-row.field-" + name + ", .form-row .field-" + name);
    }
    var method = field("auth_method");
    // style.display, not the hidden attribute: the admin's CSS may set a display.
    function show(element, visible) { element.style.display = visible ? "" : "none"; }
    function showOAuth() {
      var oauth = !!method && BEARER.indexOf(method.value) !== -1;
      // The admin's OAuth 2.0 inline (saved OAuth accounts) or "My SMTP settings"' section.
      var section = document.getElementById("oauth-group") || document.getElementById("multismtp-oauth");
      if (section) { show(section, oauth); }
      if (note) { show(note, oauth && !section); }
      ["password", "clear_password"].forEach(function (name) {
        Array.prototype.forEach.call(rows(name), function (row) { show(row, !oauth); });
      });
    }
    if (method) { method.addEventListener("change", showOAuth); }
    showOAuth();
    select.addEventListener("change", function () {
      var p = presets[select.value];
      if (caveat) { caveat.textContent = p ? p.caveat : ""; }
      if (!p) { return; }
      field("host").value = p.host;
      field("port").value = p.port;
      if (field("security")) { field("security").value = p.security; }
      if (method) {
        // As Preset.auth_method_for: the preset's method, else no OAuth method.
        if (p.auth_method) { method.value = p.auth_method; }
        else if (BEARER.indexOf(method.value) !== -1) { method.value = "auto"; }
      }
      var provider = field("oauth-0-provider");
      if (provider && p.oauth_provider) { provider.value = p.oauth_provider; }
      showOAuth();
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
