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
	"strings"
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

// InstallDependencies is `pulumi install` and the last step of `pulumi new`: the project's virtualenv
// (runtime option `virtualenv`) is made when missing and requirements.txt installed into it, by the
// same sdk/v3 toolchain code the upstream host uses; its output is streamed to the CLI.
func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	info := req.GetInfo()
	if info == nil { // an old CLI: only the directory
		info = &pulumirpc.ProgramInfo{RootDirectory: req.GetDirectory(), ProgramDirectory: req.GetDirectory()}
	}
	opts, err := pythonOptions(info)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.GetIsTerminal())
	if err != nil {
		return err
	}
	defer closer.Close()
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Installing dependencies...\n\n")
	if err := tc.InstallDependencies(server.Context(), info.GetProgramDirectory(),
		req.GetUseLanguageVersionTools(), true, stdout, stderr); err != nil {
		return err
	}
	return closer.Close() // the toolchain said "Finished installing dependencies"
}

// RuntimeOptionsPrompts: nothing to ask during `pulumi new` (a template names its virtualenv; the
// toolchain is pip unless Pulumi.yaml says otherwise).
func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// About is `pulumi about`'s language section: the interpreter of the project's toolchain.
func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	info := req.GetInfo()
	if info == nil {
		return &pulumirpc.AboutResponse{}, nil
	}
	opts, err := pythonOptions(info)
	if err != nil {
		return nil, err
	}
	if r := venvAbout(opts); r != nil {
		return r, nil
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	about, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: about.PythonExecutable, Version: about.PythonVersion.String(),
		Metadata: map[string]string{"toolchainVersion": about.ToolchainVersion.String()}}, nil
}

// venvAbout answers About from the virtualenv's files when the project names one (pip toolchain): the CLI
// asks at every preview, up, refresh and destroy (for the update's metadata), and the toolchain's About
// runs three interpreters to answer (`python -m pip --version`, `python -c ...sys.executable`, `python
// --version`: ~0.12 s of CPU, a tenth of a no-op preview's). pyvenv.cfg holds the interpreter's version,
// bin/python is the executable and pip's dist-info directory names its version. nil: ask the toolchain.
func venvAbout(opts toolchain.PythonOptions) *pulumirpc.AboutResponse {
	if opts.Virtualenv == "" || (opts.Toolchain != toolchain.Pip && opts.Toolchain != toolchain.Auto) {
		return nil
	}
	if opts.Toolchain == toolchain.Auto { // Auto is pip unless a uv or poetry lock file is found upwards
		for dir := opts.ProgramDir; dir != ""; {
			for _, lock := range []string{"uv.lock", "poetry.lock"} {
				if _, err := os.Stat(filepath.Join(dir, lock)); err == nil {
					return nil
				}
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	venv := opts.Virtualenv
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(opts.Root, venv)
	}
	cfg, err := os.ReadFile(filepath.Join(venv, "pyvenv.cfg"))
	if err != nil {
		return nil
	}
	pyVersion := ""
	for _, line := range strings.Split(string(cfg), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && (strings.TrimSpace(k) == "version" || strings.TrimSpace(k) == "version_info") {
			pyVersion = strings.TrimSpace(v)
		}
	}
	exe := filepath.Join(venv, "bin", "python")
	if _, err := os.Stat(exe); err != nil || pyVersion == "" {
		return nil
	}
	meta := map[string]string{}
	if found, _ := filepath.Glob(filepath.Join(venv, "lib", "python*", "site-packages", "pip-*.dist-info")); len(found) == 1 {
		meta["toolchainVersion"] = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(found[0]), "pip-"), ".dist-info")
	}
	return &pulumirpc.AboutResponse{Executable: exe, Version: pyVersion, Metadata: meta}
}

// GetProgramDependencies lists the packages installed in the project's virtualenv (`pulumi about`).
func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	info := req.GetInfo()
	if info == nil {
		return &pulumirpc.GetProgramDependenciesResponse{}, nil
	}
	opts, err := pythonOptions(info)
	if err != nil {
		return nil, err
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	deps := make([]*pulumirpc.DependencyInfo, 0, len(pkgs))
	for _, p := range pkgs {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
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
