// Show why an htmx action was refused (htmx does not swap error responses itself).
document.addEventListener("htmx:responseError", function (event) {
  const flash = document.getElementById("flash");
  const xhr = event.detail.xhr;
  let text = xhr.responseText;
  try { text = JSON.parse(text).detail; } catch (e) { /* plain text */ }
  flash.textContent = "Refused (" + xhr.status + "): " + text;
  flash.hidden = false;
});
