// pulumi-language-python for pulumi-dbos: a small Python language host built from
// github.com/pulumi/pulumi/sdk/v3 (the upstream host module is not served by the Go
// module proxy here). It runs pulumi-language-python-exec (beside it) with the
// project's virtualenv; see scripts/ensure-pulumi.sh and README "Set-up".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// version is set at build time from scripts/pulumi-version (-ldflags "-X main.version=...").
var version = "0.0.0-dev"

const userActionableExit = 32 // pulumi-language-python-exec: error already shown to the user

func main() {
	var tracing, executor string
	flag.StringVar(&tracing, "tracing", "", "Zipkin-compatible tracing endpoint")
	flag.StringVar(&executor, "use-executor", "", "path to pulumi-language-python-exec")
	// Accepted-but-ignored legacy flags (the real host still declares them).
	flag.String("virtualenv", "", "[obsolete]")
	flag.String("root", "", "[obsolete]")
	flag.String("typechecker", "", "[obsolete]")
	flag.String("toolchain", "pip", "[obsolete]")
	// -v=N and --logtostderr (sent by the engine with --logflow) are registered by glog,
	// which the logging package imports.
	flag.Parse()
	logging.InitLogging(false, 0, false)

	if executor == "" {
		self, err := os.Executable()
		if err != nil {
			cmdutil.Exit(err)
		}
		executor = filepath.Join(filepath.Dir(self), "pulumi-language-python-exec")
		if _, err := os.Stat(executor); err != nil {
			cmdutil.Exit(fmt.Errorf("missing executor %s: %w", executor, err))
		}
	}

	var engineAddress string
	if args := flag.Args(); len(args) > 0 {
		engineAddress = args[0] // last positional arg = engine gRPC address
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	cancelChannel := make(chan bool)
	go func() { <-ctx.Done(); cancel(); close(cancelChannel) }()
	if engineAddress != "" {
		// exit when the engine goes away
		if err := rpcutil.Healthcheck(ctx, engineAddress, 5*time.Minute, cancel); err != nil {
			cmdutil.Exit(err)
		}
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancelChannel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, &host{exec: executor, engine: engineAddress, tracing: tracing})
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start language host RPC server: %w", err))
	}
	fmt.Printf("%d\n", handle.Port) // the ONLY thing written to stdout before serving
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(err)
	}
}

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer // embed by value
	exec, engine, tracing                        string
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engine = req.EngineAddress // only used when attached via PULUMI_DEBUG_LANGUAGES
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

// Required: the host fails to load the runtime if this errors. "" or a semver are fine.
func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// No packages => engine installs/downloads nothing for the program.
func (h *host) GetRequiredPackages(context.Context, *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func pythonOptions(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
	o := toolchain.PythonOptions{Root: info.GetRootDirectory(), ProgramDir: info.GetProgramDirectory()}
	opts := info.GetOptions().AsMap() // Pulumi.yaml runtime.options
	if v, ok := opts["virtualenv"]; ok {
		s, ok := v.(string)
		if !ok {
			return o, errors.New("virtualenv option must be a string")
		}
		o.Virtualenv = s // relative to Root
	}
	if v, ok := opts["toolchain"]; ok {
		switch v {
		case "pip":
			o.Toolchain = toolchain.Pip
		case "poetry":
			o.Toolchain = toolchain.Poetry
		case "uv":
			o.Toolchain = toolchain.Uv
		default:
			return o, fmt.Errorf("unsupported toolchain option: %v", v)
		}
	}
	return o, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	if h.engine == "" {
		return nil, errors.New("no engine address")
	}
	opts, err := pythonOptions(req.GetInfo())
	if err != nil {
		return nil, err
	}
	args := []string{h.exec}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engine)
	add("project", req.GetProject())
	add("root_directory", req.GetInfo().GetRootDirectory())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())
	args = append(args, req.GetInfo().GetEntryPoint()) // "." or a file
	args = append(args, req.GetArgs()...)

	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, args...) // python <exec> --monitor ... ENTRYPOINT ARGS...
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr // engine relays our stdout/stderr as diagnostics

	env := cmd.Env // set by venv activation, else nil
	if env == nil {
		env = os.Environ()
	}
	if req.GetConfig() != nil {
		b, err := json.Marshal(req.GetConfig()) // {"proj:key":"value",...}
		if err != nil {
			return nil, err
		}
		env = append(env, "PULUMI_CONFIG="+string(b))
	}
	keys := req.GetConfigSecretKeys()
	if keys == nil {
		keys = []string{}
	}
	b, err := json.Marshal(keys) // ["proj:secretKey",...]
	if err != nil {
		return nil, err
	}
	cmd.Env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+string(b))

	if err := cmd.Run(); err != nil {
		_ = os.Stdout.Sync()
		_ = os.Stderr.Sync()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			switch code := ee.ExitCode(); code {
			case userActionableExit:
				return &pulumirpc.RunResponse{Bail: true}, nil
			case 0:
				return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited unexpectedly: %v", ee)}, nil
			default:
				return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with non-zero exit code: %d", code)}, nil
			}
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf(
			"problem executing program (could not run language executor): %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}
