// The console's style sheet, served as /ui/app/console.css (tsc copies no .css files).
export const consoleCss = `
:root { --fg: #1d2330; --muted: #667085; --line: #d9dee7; --bg: #f6f7f9; --card: #fff; --accent: #2f5bd3;
  --ok: #1a7f37; --bad: #c62828; --warn: #b26a00; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
body { margin: 0; }
header { display: flex; gap: 1.2rem; align-items: center; padding: .6rem 1.2rem; background: #1d2330; color: #fff; flex-wrap: wrap; }
header strong { font-size: 1.05rem; letter-spacing: .02em; }
header nav a { color: #c9d3ea; text-decoration: none; margin-right: .9rem; }
header nav a.active, header nav a:hover { color: #fff; text-decoration: underline; }
header .login { margin-left: auto; display: flex; gap: .4rem; align-items: center; font-size: .85rem; }
main { padding: 1rem 1.2rem; max-width: 1400px; }
h1 { font-size: 1.3rem; margin: .2rem 0 .8rem; } h2 { font-size: 1.05rem; margin: 1.2rem 0 .5rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1rem; }
.row { display: flex; gap: .6rem; align-items: end; flex-wrap: wrap; }
label { display: flex; flex-direction: column; font-size: .8rem; color: var(--muted); gap: .15rem; }
input, select, textarea, button { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
button { cursor: pointer; background: #eef1f6; } button.primary { background: var(--accent); color: #fff; border-color: var(--accent); }
button.danger { background: var(--bad); color: #fff; border-color: var(--bad); } button:disabled { opacity: .5; cursor: default; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; } th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; } td.mono, .mono { font-family: ui-monospace, monospace; font-size: .82rem; word-break: break-all; }
.status { display: inline-block; padding: 0 .45rem; border-radius: 9px; font-size: .8rem; background: #e8ebf1; }
.status.succeeded { background: #dcf3e2; color: var(--ok); } .status.failed { background: #fde2e2; color: var(--bad); }
.status.aborting { background: #fff0d6; color: var(--warn); } .status.submitted { background: #e2e9fb; color: var(--accent); }
.counts { display: flex; gap: 1.5rem; } .counts div b { display: block; font-size: 1.4rem; }
.error { color: var(--bad); } .muted { color: var(--muted); } .excerpt { white-space: pre-wrap; max-height: 6em; overflow: auto; }
.timeline { list-style: none; padding: 0; margin: 0; border-left: 2px solid var(--line); }
.timeline li { padding: .2rem 0 .5rem 1rem; position: relative; }
.timeline li::before { content: ''; position: absolute; left: -6px; top: .55rem; width: 10px; height: 10px; border-radius: 50%; background: var(--accent); }
dialog { border: 1px solid var(--line); border-radius: 8px; padding: 1rem 1.2rem; max-width: 480px; }
dialog::backdrop { background: rgba(20, 25, 35, .45); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 1rem; }
svg.chart { width: 100%; height: 160px; background: #fbfcfd; border: 1px solid var(--line); border-radius: 4px; }
svg.chart polyline { fill: none; stroke: var(--accent); stroke-width: 1.8; } svg.chart text { font-size: 10px; fill: var(--muted); }
.pager { display: flex; gap: .5rem; align-items: center; margin-top: .6rem; }
`;
