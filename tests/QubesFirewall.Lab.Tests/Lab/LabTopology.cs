using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace QubesFirewall.Lab.Tests.Lab;

/// <summary>
/// A copy of a Qubes R4.2+ network topology in network namespaces: one namespace per qube (named
/// <c>qfw&lt;pid&gt;n&lt;k&gt;-&lt;qube&gt;</c>), one per LAN host and one for the LAN itself, wired with veth pairs the way
/// Qubes wires vifs (routed, /32 addresses, gateway = the netvm's own address, interface groups 0/1/2), with the
/// documented baseline ruleset, masquerade at every hop, DNS DNAT and the qubes-firewall agent stand-in.
/// Also the xunit collection fixture of the "Lab" collection (default layout, see <see cref="LabTopologyOptions.Default"/>);
/// tests needing a variant create their own instance and dispose it.
/// </summary>
public sealed class LabTopology : IDisposable
{
    public const string LanNode = "lan";

    /// <summary>Environment variable holding the qube's fake /rw/config folder when a persisted script runs.</summary>
    public const string RwConfigEnv = "QFW_LAB_RW_CONFIG";

    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(1);

    private static int _counter;
    private static readonly List<LabTopology> Live = [];

    private readonly Dictionary<string, LabNode> _nodes = new(StringComparer.Ordinal);
    private readonly List<LabNode> _order = [];
    private readonly List<LabServer> _servers = [];
    private readonly Dictionary<string, List<LabDbEntry>> _agentEntries = new(StringComparer.Ordinal);
    private readonly Dictionary<string, IReadOnlyDictionary<string, IReadOnlyList<string>>> _agentHosts = new(StringComparer.Ordinal);
    private int _disposed;

    static LabTopology()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            LabTopology[] live;
            lock (Live)
            {
                live = [.. Live];
            }

            foreach (var lab in live)
            {
                lab.Dispose();
            }
        };
    }

    /// <summary>The collection fixture: the default sample layout.</summary>
    public LabTopology()
        : this(LabTopologyOptions.Default)
    {
    }

    /// <summary>Builds a lab from a topology description (tests that need a variant; dispose it at the end).</summary>
    public static LabTopology Create(LabTopologyOptions options) => new(options);

    // xunit allows a collection fixture only one public constructor: variants go through Create
    private LabTopology(LabTopologyOptions options)
    {
        options.Validate();
        LabPreflight.EnsureReady();
        Options = options;
        var sw = Stopwatch.StartNew();
        LeftoversRemoved = LabJanitor.RemoveLeftovers();
        Prefix = $"qfw{Environment.ProcessId}n{Interlocked.Increment(ref _counter)}-";
        WorkDir = Path.Combine(Path.GetTempPath(), LabJanitor.WorkDirPrefix + Prefix);
        LabJanitor.Register(Prefix);
        lock (Live)
        {
            Live.Add(this);
        }

        try
        {
            ComputeNodes();
            Build();
        }
        catch
        {
            Dispose();
            throw;
        }

        SetupTime = sw.Elapsed;
    }

    public LabTopologyOptions Options { get; }

    /// <summary>Per-run namespace prefix, e.g. <c>qfw4711n1-</c>.</summary>
    public string Prefix { get; }

    /// <summary>Temp folder of this run (per-qube /rw/config stand-ins live below it).</summary>
    public string WorkDir { get; }

    /// <summary>How long building the lab took.</summary>
    public TimeSpan SetupTime { get; }

    /// <summary>Namespaces of killed runs removed when this lab started.</summary>
    public IReadOnlyList<string> LeftoversRemoved { get; }

    public IReadOnlyList<LabNode> Nodes => _order;

    public IEnumerable<LabNode> Qubes => _order.Where(n => n.Kind == LabNodeKind.Qube);

    public IEnumerable<LabNode> NetworkQubes => Qubes.Where(n => n.ProvidesNetwork);

    public IEnumerable<LabNode> OutsideHosts => _order.Where(n => n.Kind == LabNodeKind.Outside);

    public LabNode Node(string name) =>
        _nodes.TryGetValue(name, out var node) ? node : throw new ArgumentException($"no lab node named '{name}'");

    public string Namespace(string node) => Node(node).Namespace;

    /// <summary>IPv4 address of a qube (10.137.x.y) or of a LAN host.</summary>
    public string Ip(string node) => Node(node).Ip ?? throw new InvalidOperationException($"{node} has no IPv4 address");

    /// <summary>IPv6 address of a qube (fd09:24ef:4179::a89:qid) or of a LAN host.</summary>
    public string Ip6(string node) => Node(node).Ip6 ?? throw new InvalidOperationException($"{node} has no IPv6 address");

    // ------------------------------------------------------------------ commands

    /// <summary>Runs a command inside the node's namespace (<c>ip netns exec &lt;ns&gt; args...</c>).</summary>
    public LabExecResult Exec(string node, params string[] args) => Exec(node, args, stdin: null);

    public LabExecResult Exec(string node, IReadOnlyList<string> args, string? stdin, TimeSpan? timeout = null,
        string? workDir = null, IReadOnlyDictionary<string, string>? env = null)
    {
        ThrowIfDisposed();
        var argv = new List<string> { "ip", "netns", "exec", Namespace(node) };
        argv.AddRange(args);
        return LabProcess.Run(argv, stdin, timeout, workDir, env);
    }

    /// <summary>Runs a bash snippet inside the node's namespace.</summary>
    public LabExecResult Bash(string node, string script) => Exec(node, ["bash", "-c", script], stdin: null);

    /// <summary>Pipes an nft script into <c>nft -f -</c> inside the namespace; throws with nft's message when it fails.</summary>
    public LabExecResult NftApply(string node, string script) =>
        TryNftApply(node, script).EnsureSuccess($"nft -f - in {node}");

    /// <summary>Same as <see cref="NftApply"/>, returning the failure instead of throwing.</summary>
    public LabExecResult TryNftApply(string node, string script) => Exec(node, ["nft", "-f", "-"], script);

    /// <summary><c>nft -s list ruleset</c> in the namespace: stateless (no counter values), stable for diffing.</summary>
    public string ListRuleset(string node) =>
        Exec(node, ["nft", "-s", "list", "ruleset"], stdin: null).EnsureSuccess($"nft list ruleset in {node}").StdOut;

    // ------------------------------------------------------------------ /rw/config

    /// <summary>The qube's stand-in for /rw/config (a temp folder).</summary>
    public string RwConfigDir(string qube) => QubeNode(qube).RwConfigDir;

    /// <summary>Writes a file below the qube's /rw/config (e.g. <c>qubes-firewall-user-script</c>, <c>rc.local</c>).
    /// <paramref name="executable"/> sets mode 0755 (Qubes runs hooks only when executable), else 0644.</summary>
    public string WriteRwConfig(string qube, string relativePath, string content, bool executable = false)
    {
        var path = RwPath(qube, relativePath);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, content, new UTF8Encoding(false));
        File.SetUnixFileMode(path, executable ? Mode0755 : Mode0644);
        return path;
    }

    /// <summary>Content of a file below the qube's /rw/config, or null when it does not exist.</summary>
    public string? ReadRwConfig(string qube, string relativePath)
    {
        var path = RwPath(qube, relativePath);
        return File.Exists(path) ? File.ReadAllText(path) : null;
    }

    public bool IsRwConfigExecutable(string qube, string relativePath)
    {
        var path = RwPath(qube, relativePath);
        return File.Exists(path) && (File.GetUnixFileMode(path) & UnixFileMode.UserExecute) != 0;
    }

    public void SetRwConfigExecutable(string qube, string relativePath, bool executable) =>
        File.SetUnixFileMode(RwPath(qube, relativePath), executable ? Mode0755 : Mode0644);

    /// <summary>Runs a persisted file with bash inside the qube's namespace (<c>ip netns exec &lt;ns&gt; bash &lt;file&gt;</c>),
    /// from its /rw/config folder (also in $QFW_LAB_RW_CONFIG). Runs it whatever its mode.</summary>
    public LabExecResult RunPersisted(string qube, string relativePath)
    {
        var path = RwPath(qube, relativePath);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{qube}: /rw/config/{relativePath} does not exist", path);
        }

        var dir = RwConfigDir(qube);
        return Exec(qube, ["bash", path], stdin: null, workDir: dir,
            env: new Dictionary<string, string> { [RwConfigEnv] = dir });
    }

    private const UnixFileMode Mode0755 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
        UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    private const UnixFileMode Mode0644 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    private string RwPath(string qube, string relativePath)
    {
        if (Path.IsPathRooted(relativePath) || relativePath.Split('/').Any(p => p is ".." or ""))
        {
            throw new ArgumentException($"'{relativePath}' must be a relative path below /rw/config");
        }

        return Path.Combine(RwConfigDir(qube), relativePath);
    }

    // ------------------------------------------------------------------ reboot / reset

    /// <summary>
    /// "Reboots" a qube's firewall in the order Qubes starts it: flush everything, load the baseline; in qubes running
    /// the qubes-firewall service: the agent's tables, executables in /rw/config/qubes-firewall.d, the
    /// qubes-firewall-user-script, then the per-client chains from the entries last given; in every qube (as
    /// qubes-misc-post does): rc.local.d/*.rc then rc.local. Hooks run only when executable, each with bash.
    /// Returns the hook runs (a failing hook is logged by Qubes, not fatal: check the results).
    /// Interfaces, addresses and conntrack entries are not reset.
    /// </summary>
    public IReadOnlyList<LabExecResult> Reboot(string qube)
    {
        var node = QubeNode(qube);
        var runs = new List<LabExecResult>();
        var entries = node.RunsFirewallService ? _agentEntries.GetValueOrDefault(qube) : null;
        var ctx = entries is null ? null : AgentContext(node, entries);
        var firewallHooks = new List<string>();
        if (node.RunsFirewallService)
        {
            firewallHooks.AddRange(ExecutableHooks(qube, "qubes-firewall.d", "*"));
            if (IsRwConfigExecutable(qube, "qubes-firewall-user-script"))
            {
                firewallHooks.Add("qubes-firewall-user-script");
            }
        }

        var baseline = LabBaseline.Render(node);
        if (firewallHooks.Count == 0)
        {
            // nothing runs between the agent's init and its per-client chains: one nft transaction does it all
            if (ctx is null)
            {
                NftApply(qube, baseline);
            }
            else
            {
                LoadAgent(node, entries!, ctx, baseline);
            }
        }
        else
        {
            NftApply(qube, baseline);
            if (ctx is not null)
            {
                NftApply(qube, LabFirewallAgent.RenderInit(ctx));
            }

            runs.AddRange(firewallHooks.Select(h => RunPersisted(qube, h)));
            if (ctx is not null)
            {
                LoadAgentClients(node, entries!, ctx);
            }
        }

        foreach (var hook in ExecutableHooks(qube, "rc.local.d", "*.rc"))
        {
            runs.Add(RunPersisted(qube, hook));
        }

        if (IsRwConfigExecutable(qube, "rc.local"))
        {
            runs.Add(RunPersisted(qube, "rc.local"));
        }

        return runs;
    }

    private IEnumerable<string> ExecutableHooks(string qube, string folder, string pattern)
    {
        var dir = Path.Combine(RwConfigDir(qube), folder);
        if (!Directory.Exists(dir))
        {
            return [];
        }

        return Directory.GetFiles(dir, pattern)
            .Select(f => folder + "/" + Path.GetFileName(f))
            .Where(f => IsRwConfigExecutable(qube, f))
            .Order(StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>
    /// Back to the state right after start: servers stopped, every /rw/config emptied, agents back to the default
    /// firewall for every client, LAN hosts' rulesets flushed, every qube rebooted. Cheap enough to call at the start of
    /// each test that uses the shared fixture.
    /// </summary>
    public void Reset()
    {
        ThrowIfDisposed();
        StopAllServers();
        foreach (var node in Qubes)
        {
            if (Directory.Exists(node.RwConfigDir))
            {
                Directory.Delete(node.RwConfigDir, recursive: true);
            }

            Directory.CreateDirectory(node.RwConfigDir);
        }

        ResetAgents();
        ReloadAllRulesets();
    }

    /// <summary>Namespaces are independent: their rulesets load in parallel.</summary>
    private void ReloadAllRulesets() =>
        ForEachNode(_order, node =>
        {
            if (node.Kind == LabNodeKind.Qube)
            {
                Reboot(node.Name);
            }
            else
            {
                NftApply(node.Name, LabBaseline.Render(node));
            }
        });

    /// <summary>Runs an action per node, each on its own thread (the work is waiting on child processes, so the
    /// thread pool's slow growth would serialize it); the first failure surfaces as itself.</summary>
    private static void ForEachNode(IEnumerable<LabNode> nodes, Action<LabNode> action)
    {
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        var threads = nodes.Select(n => new Thread(() =>
        {
            try
            {
                action(n);
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
        })
        { IsBackground = true, Name = "lab-" + n.Name }).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (errors.TryDequeue(out var first))
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
        }
    }

    // ------------------------------------------------------------------ qubes-firewall agent stand-in

    /// <summary>
    /// Gives the network qube's agent stand-in its QubesDB firewall entries (the whole set: clients without entries
    /// get the default firewall, accept) and (re)loads its tables the way the agent does. Returns per-client outcomes.
    /// A later <see cref="Reboot"/> loads the same entries again.
    /// </summary>
    /// <param name="hosts">Name resolution for dsthost= rules in this network qube (default: <see cref="LabTopologyOptions.Hosts"/>);
    /// kept for later reboots, as the lab's stand-in for the qube's resolver.</param>
    public LabAgentResult LoadFirewallAgent(string netQube, IEnumerable<LabDbEntry> entries,
        IReadOnlyDictionary<string, IReadOnlyList<string>>? hosts = null)
    {
        var node = QubeNode(netQube);
        if (!node.RunsFirewallService)
        {
            throw new InvalidOperationException($"{netQube} does not run the qubes-firewall service (not a network qube, or FirewallService=false)");
        }

        var list = entries.ToList();
        _agentEntries[netQube] = list;
        if (hosts is null)
        {
            _agentHosts.Remove(netQube);
        }
        else
        {
            _agentHosts[netQube] = hosts;
        }

        var ctx = AgentContext(node, list);
        return new LabAgentResult(netQube, LabFirewallAgent.RenderInit(ctx), LoadAgent(node, list, ctx, prefix: ""));
    }

    /// <summary>A clean stop of the qubes-firewall service: its tables are deleted (traffic then flows unfiltered by it).
    /// The entries are kept: the next <see cref="Reboot"/> starts the service again, as in Qubes.</summary>
    public void StopFirewallAgent(string netQube)
    {
        var node = QubeNode(netQube);
        var ctx = AgentContext(node, _agentEntries.GetValueOrDefault(netQube) ?? []);
        var sb = new StringBuilder();
        foreach (var fam in ctx.WithIpv6Table ? new[] { "ip", "ip6" } : ["ip"])
        {
            sb.Append($"add table {fam} {LabFirewallAgent.Table}\ndelete table {fam} {LabFirewallAgent.Table}\n");
        }

        NftApply(netQube, sb.ToString());
    }

    /// <summary>The entries the network qube's agent stand-in uses (null when it does not run).</summary>
    public IReadOnlyList<LabDbEntry>? FirewallEntries(string netQube) => _agentEntries.GetValueOrDefault(netQube);

    private void ResetAgents()
    {
        _agentEntries.Clear();
        _agentHosts.Clear();
        if (Options.StartFirewallAgents)
        {
            foreach (var node in NetworkQubes.Where(n => n.RunsFirewallService))
            {
                _agentEntries[node.Name] = [];
            }
        }
    }

    private LabAgentContext AgentContext(LabNode node, IReadOnlyList<LabDbEntry> entries)
    {
        var targets = LabFirewallAgent.Targets(entries);
        return new LabAgentContext(
            Dns4: node.Resolvers,
            Dns6: [],
            Connected4: node.Clients.Where(c => c.Ip is not null).Select(c => c.Ip!).ToList(),
            Connected6: node.Clients.Where(c => c.Ip6 is not null).Select(c => c.Ip6!).ToList(),
            WithIpv6Table: node.Ipv6Enabled || targets.Any(t => LabFirewallAgent.FamilyOf(t) == 6),
            Hosts: _agentHosts.GetValueOrDefault(node.Name) ?? Options.Hosts);
    }

    /// <summary>The agent's start: init, then every client. Tried as one transaction (after <paramref name="prefix"/>);
    /// when nft refuses it, done step by step as the agent does, so a client whose rules nft refuses gets the drop fallback.</summary>
    private List<LabAgentClientResult> LoadAgent(LabNode node, IReadOnlyList<LabDbEntry> entries, LabAgentContext ctx, string prefix)
    {
        var init = LabFirewallAgent.RenderInit(ctx);
        var plan = PlanAgentClients(node, entries, ctx);
        var all = new StringBuilder(prefix).Append(init);
        foreach (var c in plan)
        {
            all.Append(LabFirewallAgent.RenderCreateChain(c.Address)).Append(c.Script);
        }

        if (TryNftApply(node.Name, all.ToString()).Success)
        {
            return plan;
        }

        NftApply(node.Name, prefix + init);
        return LoadAgentClients(node, entries, ctx);
    }

    private List<LabAgentClientResult> PlanAgentClients(LabNode node, IReadOnlyList<LabDbEntry> entries, LabAgentContext ctx)
    {
        var targets = LabFirewallAgent.Targets(entries);
        var addresses = new List<string>();
        foreach (var c in node.Clients)
        {
            if (c.Ip is not null)
            {
                addresses.Add(c.Ip);
            }

            if (c.Ip6 is not null && ctx.WithIpv6Table)
            {
                addresses.Add(c.Ip6);
            }
        }

        addresses.AddRange(targets.Where(t => !addresses.Contains(t)));
        var results = new List<LabAgentClientResult>();
        foreach (var addr in addresses)
        {
            var chain = LabFirewallAgent.ChainFor(addr);
            if (!targets.Contains(addr))
            {
                results.Add(new(addr, chain, LabAgentClientStatus.DefaultAccept, null,
                    LabFirewallAgent.RenderClientRules(addr, LabFirewallAgent.DefaultAcceptRules, ctx)));
                continue;
            }

            try
            {
                results.Add(new(addr, chain, LabAgentClientStatus.Applied, null,
                    LabFirewallAgent.RenderClientRules(addr, LabFirewallAgent.ReadRules(entries, addr), ctx)));
            }
            catch (LabRuleParseException e)
            {
                results.Add(new(addr, chain, LabAgentClientStatus.BlockedParseError, e.Message,
                    LabFirewallAgent.RenderBlockAll(addr, ctx)));
            }
        }

        return results;
    }

    /// <summary>Per client, as the agent does: create the chain and its jump, load the rules, on failure the drop fallback.</summary>
    private List<LabAgentClientResult> LoadAgentClients(LabNode node, IReadOnlyList<LabDbEntry> entries, LabAgentContext ctx)
    {
        var results = new List<LabAgentClientResult>();
        foreach (var planned in PlanAgentClients(node, entries, ctx))
        {
            NftApply(node.Name, LabFirewallAgent.RenderCreateChain(planned.Address));
            var applied = TryNftApply(node.Name, planned.Script);
            if (applied.Success)
            {
                results.Add(planned);
                continue;
            }

            var fallback = LabFirewallAgent.RenderBlockAll(planned.Address, ctx);
            NftApply(node.Name, fallback);
            results.Add(planned with { Status = LabAgentClientStatus.BlockedApplyError, Message = applied.StdErr.Trim(), Script = fallback });
        }

        return results;
    }

    // ------------------------------------------------------------------ traffic

    /// <summary>
    /// Starts a server in the node's namespace on <paramref name="port"/> (dual stack unless <paramref name="bind"/> is
    /// given) answering each TCP connection or UDP datagram with <c>&lt;node&gt; &lt;peer address&gt;</c>; returns once it listens.
    /// Stopped by Dispose, <see cref="Reset"/> or the end of the lab.
    /// </summary>
    public LabServer StartServer(string node, int port, LabProtocol protocol = LabProtocol.Tcp, string? bind = null)
    {
        ThrowIfDisposed();
        var argv = new List<string> { "ip", "netns", "exec", Namespace(node) };
        argv.AddRange(LabTraffic.ServerArgs(node, port, protocol, bind, out var ipv4Only));
        var process = LabProcess.Start(argv, redirectStdin: true);
        var server = new LabServer(process, node, port, protocol, s =>
        {
            lock (_servers)
            {
                _servers.Remove(s);
            }
        });
        lock (_servers)
        {
            _servers.Add(server);
        }

        try
        {
            server.WaitUntilListening(ipv4Only, TimeSpan.FromSeconds(5));
        }
        catch
        {
            server.Dispose();
            throw;
        }

        return server;
    }

    /// <summary>
    /// From <paramref name="from"/>'s namespace, connects (TCP) or sends one datagram (UDP) to host:port and waits for
    /// the server's reply line, at most <paramref name="timeout"/> (default 1 s). Host must be an IP literal.
    /// </summary>
    public LabConnectResult Connect(string from, string host, int port, LabProtocol protocol = LabProtocol.Tcp,
        TimeSpan? timeout = null, string? bind = null)
    {
        ThrowIfDisposed();
        var limit = timeout ?? DefaultConnectTimeout;
        var argv = new List<string> { "ip", "netns", "exec", Namespace(from) };
        argv.AddRange(LabTraffic.ClientArgs(host, port, protocol, limit, bind));
        return LabTraffic.Connect(argv, protocol, limit);
    }

    public void StopAllServers()
    {
        LabServer[] servers;
        lock (_servers)
        {
            servers = [.. _servers];
        }

        foreach (var s in servers)
        {
            s.Dispose();
        }
    }

    // ------------------------------------------------------------------ build

    private LabNode QubeNode(string name)
    {
        var node = Node(name);
        return node.Kind == LabNodeKind.Qube ? node : throw new ArgumentException($"'{name}' is not a qube");
    }

    public static string QubeIpv4(int qid) =>
        $"10.137.{(qid - 1) / 254}.{(qid - 1) % 254 + 1}";

    public static string QubeIpv6(int qid) =>
        "fd09:24ef:4179::a89:" + qid.ToString("x", CultureInfo.InvariantCulture);

    private void ComputeNodes()
    {
        var lan = AddNode(LanNode, LabNodeKind.Lan);
        lan.Ip = Options.LanRouter;
        lan.Ip6 = Options.LanRouter6;
        foreach (var host in Options.OutsideHosts)
        {
            var n = AddNode(host.Name, LabNodeKind.Outside);
            n.Ip = host.Address;
            n.Ip6 = host.Address6;
        }

        var specs = Options.Qubes.ToDictionary(q => q.Name, StringComparer.Ordinal);
        bool Feature(LabQube q) =>
            q.Ipv6 ?? (q.NetVm is not null ? Feature(specs[q.NetVm]) : q.ProvidesNetwork && Options.Ipv6);

        foreach (var q in Options.Qubes)
        {
            var n = AddNode(q.Name, LabNodeKind.Qube);
            n.Spec = q;
            var networked = q.NetVm is not null || q.ProvidesNetwork;
            n.Ipv6Feature = Feature(q);
            n.Ip = networked ? QubeIpv4(q.Qid) : null;
            n.Ip6 = networked && n.Ipv6Feature ? QubeIpv6(q.Qid) : null;
            n.RwConfigDir = Path.Combine(WorkDir, q.Name, "rw", "config");
            Directory.CreateDirectory(n.RwConfigDir);
        }

        var rootIndex = 0;
        foreach (var n in Qubes)
        {
            if (n.Spec!.NetVm is not null)
            {
                n.NetVm = _nodes[n.Spec.NetVm];
                n.NetVm.Clients.Add(n);
                n.Resolvers = LabBaseline.VirtualDns;
            }
            else if (n.ProvidesNetwork)
            {
                n.PhysicalNic = Options.PhysicalNic;
                n.LanAddress = Options.LanAddresses[rootIndex];
                n.LanAddress6 = n.Ipv6Enabled ? Options.LanAddresses6[rootIndex] : null;
                n.Resolvers = [Options.LanRouter];
                rootIndex++;
            }
        }
    }

    private LabNode AddNode(string name, LabNodeKind kind)
    {
        var node = new LabNode(name, kind, Prefix + name);
        _nodes.Add(name, node);
        _order.Add(node);
        return node;
    }

    private void Build()
    {
        // 1. namespaces and veth pairs, created straight inside their namespaces (no name clash in the root namespace)
        var batch = new StringBuilder();
        foreach (var n in _order)
        {
            batch.Append("netns add ").Append(n.Namespace).Append('\n');
        }

        var lan = Node(LanNode);
        var lanPorts = new List<string>();
        foreach (var n in _order.Where(n => n.Kind == LabNodeKind.Outside || n.PhysicalNic is not null))
        {
            var port = "port" + lanPorts.Count.ToString(CultureInfo.InvariantCulture);
            lanPorts.Add(port);
            batch.Append($"link add name {n.Uplink} netns {n.Namespace} type veth peer name {port} netns {lan.Namespace}\n");
        }

        foreach (var n in Qubes.Where(n => n.NetVm is not null))
        {
            batch.Append($"link add name eth0 netns {n.Namespace} type veth peer name {n.Vif} netns {n.NetVm!.Namespace}\n");
        }

        LabProcess.Run(["ip", "-batch", "-"], batch.ToString()).EnsureSuccess("creating lab namespaces and links");

        // 2. per namespace: addresses, routes, neighbours, sysctls (one bash per namespace)
        ForEachNode(_order, n =>
        {
            var script = n.Kind switch
            {
                LabNodeKind.Lan => LanScript(lanPorts),
                LabNodeKind.Outside => OutsideScript(n),
                _ => QubeScript(n),
            };
            Exec(n.Name, ["bash", "-e", "-c", script], stdin: null).EnsureSuccess($"configuring {n.Name}");
        });

        // 2b. wait until the kernel has activated every link: right after many links come up, linkwatch (rate
        // limited to one run a second) may leave a link with the noop qdisc or not yet "UP" for up to a second, and
        // the first packets through it vanish (a first connection then needs a SYN retransmit, 1 s).
        ForEachNode(_order, n =>
            Exec(n.Name, ["bash", "-c", LinksReadyScript], stdin: null).EnsureSuccess($"waiting for the links of {n.Name}"));

        // 3. rulesets and agents
        ResetAgents();
        ReloadAllRulesets();
    }

    private const string LinksReadyScript =
        "for i in $(seq 250); do\n" +
        "  if ! ip -o link show | grep -v ': lo:' | grep -qE 'qdisc noop|state (DOWN|LOWERLAYERDOWN|UNKNOWN|DORMANT)'; then exit 0; fi\n" +
        "  sleep 0.02\n" +
        "done\n" +
        "ip -o link show >&2\n" +
        "echo 'links did not come up within 5 s' >&2\n" +
        "exit 1\n";

    private const string Preamble =
        "for f in /proc/sys/net/ipv6/conf/*/accept_dad; do echo 0 > \"$f\"; done\n" +
        "ip link set lo up\n";

    private string LanScript(List<string> ports)
    {
        var sb = new StringBuilder(Preamble);
        sb.Append("ip link add br0 type bridge\n");
        foreach (var p in ports)
        {
            sb.Append($"ip link set {p} master br0\nip link set {p} up\n");
        }

        sb.Append("ip link set br0 up\n");
        sb.Append($"ip addr add {Options.LanRouter}/{Options.LanPrefixLength} dev br0\n");
        sb.Append($"ip addr add {Options.LanRouter6}/{Options.LanPrefixLength6} dev br0 nodad\n");
        return sb.ToString();
    }

    private string OutsideScript(LabNode n)
    {
        var sb = new StringBuilder(Preamble);
        sb.Append("ip link set eth0 up\n");
        sb.Append($"ip addr add {n.Ip}/{Options.LanPrefixLength} dev eth0\n");
        sb.Append($"ip addr add {n.Ip6}/{Options.LanPrefixLength6} dev eth0 nodad\n");
        sb.Append($"ip route add default via {Options.LanRouter} dev eth0\n");
        sb.Append($"ip -6 route add default via {Options.LanRouter6} dev eth0\n");
        var sysNet = Qubes.FirstOrDefault(q => q.PhysicalNic is not null);
        if (Options.OutsideRoutesToQubes && sysNet is not null)
        {
            sb.Append($"ip route add 10.137.0.0/16 via {sysNet.LanAddress} dev eth0\n");
            sb.Append($"ip route add 10.138.0.0/16 via {sysNet.LanAddress} dev eth0\n");
            if (sysNet.LanAddress6 is not null)
            {
                sb.Append($"ip -6 route add fd09:24ef:4179::/64 via {sysNet.LanAddress6} dev eth0\n");
            }
        }

        return sb.ToString();
    }

    private const string NetvmMac = "fe:ff:ff:ff:ff:ff";

    private string QubeScript(LabNode n)
    {
        var sb = new StringBuilder(Preamble);
        if (n.NetVm is { } netvm)
        {
            // setup-ip: /32 address, the netvm's own address as gateway (static neighbour), link route, default route
            var gw = netvm.Ip!;
            sb.Append($"ip link set eth0 address {n.Mac}\n");
            sb.Append("ip link set eth0 group 1 up\n");
            sb.Append($"ip addr add {n.Ip}/32 dev eth0\n");
            sb.Append($"ip neigh replace {gw} dev eth0 lladdr {NetvmMac} nud permanent\n");
            sb.Append($"ip route replace {gw} dev eth0 scope link\n");
            sb.Append($"ip route replace default via {gw} dev eth0 onlink\n");
            if (n.Ip6 is not null && netvm.Ip6 is not null)
            {
                var gw6 = netvm.Ip6;
                sb.Append($"ip addr add {n.Ip6}/128 dev eth0 nodad\n");
                sb.Append($"ip -6 neigh replace {gw6} dev eth0 lladdr {NetvmMac} nud permanent\n");
                sb.Append($"ip -6 route replace {gw6}/128 dev eth0\n");
                sb.Append($"ip -6 route replace default via {gw6} dev eth0 onlink\n");
            }
        }
        else if (n.PhysicalNic is not null)
        {
            // the physical NIC stays in interface group 0
            sb.Append($"ip link set {n.PhysicalNic} up\n");
            sb.Append($"ip addr add {n.LanAddress}/{Options.LanPrefixLength} dev {n.PhysicalNic}\n");
            sb.Append($"ip route add default via {Options.LanRouter} dev {n.PhysicalNic}\n");
            if (n.LanAddress6 is not null)
            {
                sb.Append($"ip addr add {n.LanAddress6}/{Options.LanPrefixLength6} dev {n.PhysicalNic} nodad\n");
                sb.Append($"ip -6 route add default via {Options.LanRouter6} dev {n.PhysicalNic}\n");
            }
        }

        foreach (var c in n.Clients)
        {
            // vif-route-qubes: group 2, the netvm's address on the vif, /32 route and static neighbour per client
            var vif = c.Vif!;
            var metric = 32752 - c.DomId;
            sb.Append($"ip link set {vif} address {NetvmMac}\n");
            sb.Append($"ip link set {vif} group 2 up\n");
            sb.Append($"echo 1 > /proc/sys/net/ipv4/conf/{vif}/proxy_arp\n");
            sb.Append($"ip neigh replace {c.Ip} dev {vif} lladdr {c.Mac} nud permanent\n");
            sb.Append($"ip route replace {c.Ip} dev {vif} metric {metric}\n");
            sb.Append($"ip addr add {n.Ip}/32 dev {vif}\n");
            if (c.Ip6 is not null && n.Ip6 is not null)
            {
                sb.Append($"ip addr add {n.Ip6}/128 dev {vif} nodad\n");
                sb.Append($"echo 1 > /proc/sys/net/ipv6/conf/{vif}/proxy_ndp\n");
                sb.Append($"ip -6 neigh replace {c.Ip6} dev {vif} lladdr {c.Mac} nud permanent\n");
                sb.Append($"ip -6 route replace {c.Ip6} dev {vif} metric {metric}\n");
            }
        }

        if (n.ProvidesNetwork)
        {
            sb.Append("echo 1 > /proc/sys/net/ipv4/ip_forward\n");
            if (n.Ipv6Enabled)
            {
                sb.Append("echo 1 > /proc/sys/net/ipv6/conf/all/forwarding\n");
            }
        }

        return sb.ToString();
    }

    // ------------------------------------------------------------------ teardown

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        StopAllServers();
        var present = LabJanitor.ListNamespaces().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)).ToList();
        foreach (var ns in present)
        {
            LabJanitor.KillProcessesIn(ns);
        }

        if (present.Count > 0)
        {
            LabProcess.Run(["ip", "-batch", "-"], string.Concat(present.Select(ns => $"netns delete {ns}\n")));
        }

        LabJanitor.TryDeleteDirectory(WorkDir);
        LabJanitor.Unregister(Prefix);
        lock (Live)
        {
            Live.Remove(this);
        }
    }
}
