// A login link (twinflow console) carries the token in the URL's fragment,
// which browsers never send anywhere: take it, drop it from the address bar
// and the history, and log in.
const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
if (m) {
  history.replaceState(null, "", location.pathname + location.search);
  const form = document.getElementById("login");
  form.elements.token.value = decodeURIComponent(m[1]);
  form.submit();
}
