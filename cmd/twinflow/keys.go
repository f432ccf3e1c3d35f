package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/twinflow/twinflow/runtime"
	"github.com/twinflow/twinflow/runtime/natsbus"
	"github.com/twinflow/twinflow/runtime/runinfo"
	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
)

const keysUsage = `usage:
  twinflow keys [--data DIR]                        print the public keys function endpoints should accept
  twinflow keys rotate signing [--data DIR]         replace the key the runtime signs calls with
  twinflow keys rotate admin-token [--data DIR]     replace the admin API's token
  twinflow keys rotate ingress-token [--data DIR]   replace the HTTP/Connect front door's token
  twinflow keys rotate nats IDENTITY [--data DIR]   replace an NATS identity's nkey (runtime, client or a user)
  twinflow keys rotate mqtt DEVICE [--data DIR]     replace an MQTT device identity's password
  twinflow keys nats-config [-config module.yaml] [--data DIR]
                                                    print the authorization block of a nats-server configuration
                                                    with the data dir's identities and their permissions`

// keysCmd shows and rotates the data dir's keys. It makes the keys that
// are missing, so that an endpoint can be given the runtime's public key
// before the runtime first starts.
func keysCmd(args []string, out io.Writer) error {
	var verb []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		verb, args = append(verb, args[0]), args[1:]
	}
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	data := fs.String("data", os.Getenv("TWINFLOW_DATA"), "the runtime's data dir (default $TWINFLOW_DATA, else the runtime found as client commands find it, else ./data)")
	fs.StringVar(data, "data-dir", os.Getenv("TWINFLOW_DATA"), "the same as --data")
	config := fs.String("config", "", "module spec, for nats-config: its ingresses, egresses and users")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	verb = append(verb, pos...)
	dir := keysDataDir(*data)
	switch {
	case len(verb) == 0:
		if _, err := secrets.Ensure(dir, nil); err != nil {
			return err
		}
		keys, err := secrets.ReadSigningPublicKeys(dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, strings.Join(keys, ","))
		return nil
	case len(verb) == 2 && verb[0] == "rotate" && verb[1] == "signing":
		keys, err := secrets.RotateSigning(dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "new signing key: %s\n", keys[0])
		fmt.Fprintf(out, "The runtime signs with it from its next start. Until then give endpoints both keys:\n")
		fmt.Fprintf(out, "  %s=%s\n", "TWINFLOW_VERIFY_KEY", strings.Join(keys, ","))
		fmt.Fprintf(out, "then restart the runtime, then leave the old key out (twinflow keys prints the keys to accept).\n")
		return nil
	case len(verb) == 2 && verb[0] == "rotate" && verb[1] == "admin-token":
		if err := secrets.RotateAdminToken(dir); err != nil {
			return err
		}
		fmt.Fprintf(out, "the admin token in %s/%s/admin.token is replaced; a running runtime accepts only the new one from now on\n", dir, secrets.DirName)
		return nil
	case len(verb) == 2 && verb[0] == "rotate" && verb[1] == "ingress-token":
		if err := secrets.RotateIngressToken(dir); err != nil {
			return err
		}
		fmt.Fprintf(out, "the front door's token in %s/%s/ingress.token is replaced; a running runtime accepts only the new one from now on\n", dir, secrets.DirName)
		return nil
	case len(verb) == 3 && verb[0] == "rotate" && verb[1] == "nats":
		id, err := secrets.RotateNKey(dir, verb[2])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "the nkey of %s is replaced (%s, public key %s).\n", id.Name, id.SeedFile, id.Public)
		fmt.Fprintf(out, "The embedded NATS server accepts it, and no longer the old one, from the runtime's next start.\n")
		return nil
	case len(verb) == 3 && verb[0] == "rotate" && verb[1] == "mqtt":
		d, err := secrets.RotateDevicePassword(dir, verb[2])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "the password of MQTT device %s is replaced (%s).\n", d.Name, d.PasswordFile)
		fmt.Fprintf(out, "The MQTT gateway accepts it, and no longer the old one, from the runtime's next start.\n")
		return nil
	case len(verb) == 1 && verb[0] == "nats-config":
		return natsConfig(out, dir, *config)
	}
	return errors.New(keysUsage)
}

// keysDataDir is the data dir keys works on: the one given, else the
// runtime's that client commands would find, else ./data.
func keysDataDir(data string) string {
	if data != "" {
		return data
	}
	if _, err := runinfo.Read("data"); err == nil {
		return "data"
	}
	if info, err := runinfo.Current(); err == nil {
		return info.DataDir
	}
	return "data"
}

// natsConfig prints the authorization block an external nats-server needs
// to hold the same identities and permissions as the embedded one.
func natsConfig(out io.Writer, dir, config string) error {
	module := &spec.Module{}
	if config != "" {
		var err error
		if module, err = spec.Load(config); err != nil {
			return err
		}
	}
	keys, err := secrets.Ensure(dir, module.UserNames())
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "# The identities of the data dir %s and their permissions", keys.Dir)
	if config != "" {
		fmt.Fprintf(out, " for %s", config)
	}
	fmt.Fprintf(out, ".\n# Their credentials are the nkey seed files in %s: give twinflow run\n", keys.Dir)
	fmt.Fprintf(out, "# -nats-creds %s, and clients --creds %s --inbox-prefix %s.\n", keys.Runtime.SeedFile, keys.Client.SeedFile, runtime.ClientInboxPrefix)
	fmt.Fprint(out, natsbus.AuthorizationConfig(runtime.NATSUsers(module, keys)))
	return nil
}
