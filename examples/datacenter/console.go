package datacenter

import (
	"embed"
	"io/fs"
)

//go:embed console
var consolePage embed.FS

// ConsolePage is the example's page for the Twinflow web console: racks as
// grids of servers coloured by health, the rack alerts and open incidents,
// and the data center's answer to GetUnhealthyRacks, live. It uses only
// the console's generic admin API, so the runtime serves it like any
// application's page: twinflow run -console-page datacenter=DIR with this
// package's console directory, or runtime.Config.ConsolePages with this
// file system.
var ConsolePage, _ = fs.Sub(consolePage, "console")
