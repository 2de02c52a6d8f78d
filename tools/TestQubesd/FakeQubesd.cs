using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.TestQubesd;

/// <summary>One request as it arrived, with the exact bytes.</summary>
public sealed record RecordedCall(byte[] Raw, string Method, string Argument, string Source, string Destination, byte[] Payload)
{
    public string Key => Argument.Length == 0 ? Method : $"{Method}+{Argument}";
    public override string ToString() => $"{Key} {Destination} ({Payload.Length} bytes payload)";
}

/// <summary>What the server does instead of answering normally, for the next matching calls.</summary>
public enum FaultKind
{
    /// <summary><c>2</c> NUL class NUL traceback NUL message NUL.</summary>
    ExceptionReply,
    /// <summary>Closes the connection without a byte, as qubesd does on an unhandled error.</summary>
    EmptyReply,
    /// <summary>Waits <see cref="Fault.Delay"/>, then answers normally.</summary>
    SlowReply,
    /// <summary>Handles the call, sends only the first half of the reply, closes.</summary>
    CloseMidReply,
}

public sealed record Fault(FaultKind Kind, string? Method = null, string? Destination = null, int Count = 1, TimeSpan Delay = default,
    string ExceptionClass = "QubesException", string Message = "injected failure");

/// <summary>
/// A stand-in for qubesd that speaks its Admin API framing byte for byte (core-admin
/// <c>qubes/api/__init__.py</c> <c>QubesDaemonProtocol</c>) over a Unix socket, for the calls this
/// module makes. Its state is seeded from an offline Qubes root (qubes, classes, properties as
/// GetAll reports them, features, tags, power states, rule lists) and kept in memory, as qubesd keeps
/// it; like qubesd, it writes what changes back (firewall.xml on Set, qubes.xml on feature and property
/// changes, the network qube's QubesDB file in the state folder on Reload), so tests can compare
/// files whichever backend made the change. It validates as qubesd does: each Set line with the
/// engine's rule parser, an invalid line answered with an empty reply; requests over 65,536 bytes
/// aborted; unknown methods, unexpected arguments or payloads refused as ProtocolError.
/// </summary>
public sealed class FakeQubesd : IDisposable
{
    public const int BufferSize = 65536;

    private readonly object _gate = new();
    private readonly OfflineRoot _root;
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _acceptLoop;
    private readonly List<Fault> _faults = [];
    private readonly ConcurrentQueue<RecordedCall> _calls = new();
    private readonly Func<DateTimeOffset> _clock;
    private List<VmState> _vms = [];
    private Dictionary<string, QubesdProp> _globals = [];
    private Dictionary<string, string> _labels = [];
    private int _oversized;

    public FakeQubesd(string rootPath, string socketPath, Func<DateTimeOffset>? clock = null)
    {
        _clock = clock ?? (() => DateTimeOffset.UtcNow);
        _root = new OfflineRoot(rootPath, _clock);
        SocketPath = socketPath;
        Seed();
        if (File.Exists(socketPath)) File.Delete(socketPath);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        _listener.Listen(64);
        _acceptLoop = Task.Run(AcceptLoop);
    }

    public string SocketPath { get; }

    public string RootPath => _root.RootPath;

    /// <summary>Before R4.3 qubesd answers ProtocolError and PermissionDenied with an empty reply; later ones with an exception reply.</summary>
    public bool ProtocolErrorsAsExceptions { get; set; }

    /// <summary>False: behave like R4.0's qubesd, which has no admin.vm.property.GetAll / admin.property.GetAll.</summary>
    public bool SupportsGetAll { get; set; } = true;

    /// <summary>R4.3 and later add <c>uuid=...</c> to each admin.vm.List line.</summary>
    public bool ListWithUuid { get; set; }

    /// <summary>
    /// Modelled work of qubesd per call (zero: none). qubesd runs every handler in one asyncio loop, so this time
    /// is spent behind one lock: overlapping calls wait for each other and only the latency below overlaps.
    /// </summary>
    public TimeSpan ServiceTime { get; set; }

    /// <summary>Modelled cost of one connection outside qubesd's loop (socket, framing, the client's side); it overlaps.</summary>
    public TimeSpan ConnectionLatency { get; set; }

    private readonly SemaphoreSlim _serviceLoop = new(1, 1);

    /// <summary>Called after a call was handled and before the reply is sent (e.g. to change state "concurrently").</summary>
    public Action<FakeQubesd, RecordedCall>? AfterCall { get; set; }

    /// <summary>If set, one line per call is appended to this file ("method+arg dest").</summary>
    public string? LogPath { get; set; }

    public IReadOnlyList<RecordedCall> Calls => _calls.ToArray();

    public int OversizedRequests => _oversized;

    private readonly ConcurrentQueue<string> _networkEvents = new();

    /// <summary>
    /// What qubesd would have done to running qubes' networking, in order: "start Q", "detach Q N",
    /// "attach Q N" (each attach also reloads Q's firewall into N's QubesDB file in the state folder).
    /// </summary>
    public IReadOnlyList<string> NetworkEvents => _networkEvents.ToArray();

    public void ClearCalls() => _calls.Clear();

    public int CountCalls(string method, string? destination = null) =>
        _calls.Count(c => c.Method == method && (destination is null || c.Destination == destination));

    public void InjectFault(Fault fault)
    {
        lock (_gate) _faults.Add(fault);
    }

    /// <summary>Changes a qube's rule list behind the client's back (another admin's edit), written through like a Set.</summary>
    public void EditRules(string vmName, Func<List<FirewallRule>, List<FirewallRule>> change)
    {
        lock (_gate)
        {
            var vm = Find(vmName) ?? throw new ArgumentException($"no qube {vmName}");
            vm.Rules = change(RulesOf(vm).ToList());
            WriteFirewall(vm);
        }
    }

    /// <summary>The rule lines the server holds for a qube (what Get returns).</summary>
    public IReadOnlyList<string> RuleLines(string vmName)
    {
        lock (_gate) return Visible(RulesOf(Find(vmName)!)).Select(r => r.Text).ToList();
    }

    public void SetPowerState(string vmName, PowerState state)
    {
        lock (_gate)
        {
            Find(vmName)!.State = state;
            _root.SetPowerState(vmName, state);
        }
    }

    // ------------------------------------------------------------------ state

    private sealed class VmState
    {
        public required string Name { get; init; }
        public required string ClassName { get; init; }
        public required QubeClass Class { get; init; }
        public required string Uuid { get; init; }
        public string? FirewallPath { get; init; }
        public PowerState State { get; set; }
        public Dictionary<string, QubesdProp> Properties { get; set; } = [];
        public Dictionary<string, string> Features { get; set; } = [];
        public List<string> Tags { get; set; } = [];
        public List<FirewallRule>? Rules { get; set; }
        public bool HasFirewall => Class is not (QubeClass.AdminVM or QubeClass.RemoteVM);
    }

    private sealed record QubesdProp(bool IsDefault, string Type, string Value);

    private static readonly HashSet<string> VmProperties = new(StringComparer.Ordinal) { "netvm", "template", "default_dispvm", "management_dispvm", "guivm", "audiovm" };
    private static readonly HashSet<string> BoolProperties = new(StringComparer.Ordinal) { "provides_network", "template_for_dispvms", "autostart", "debug", "include_in_backups", "installed_by_rpm", "updateable", "auto_cleanup" };
    private static readonly HashSet<string> IntProperties = new(StringComparer.Ordinal) { "qid", "dispid", "memory", "maxmem", "stubdom_mem", "vcpus", "qrexec_timeout", "shutdown_timeout", "backup_timestamp" };

    private static string TypeOf(string name) =>
        VmProperties.Contains(name) ? "vm" : BoolProperties.Contains(name) ? "bool" : IntProperties.Contains(name) ? "int" : name == "label" ? "label" : "str";

    private void Seed()
    {
        var inventory = _root.GetInventory();
        var old = _vms.ToDictionary(v => v.Name, StringComparer.Ordinal);
        _vms = inventory.Qubes.Select(q =>
        {
            var vm = old.TryGetValue(q.Name, out var kept) ? kept : new VmState
            {
                Name = q.Name,
                ClassName = q.ClassName.Length > 0 ? q.ClassName : q.Class.ToString(),
                Class = q.Class,
                Uuid = q.Properties.GetValueOrDefault("uuid") ?? Guid.Empty.ToString(),
                FirewallPath = q.RelativeDirectory is null ? null : Path.Combine(_root.RootPath, q.RelativeDirectory, "firewall.xml"),
                State = q.State,
                Features = q.Features.ToDictionary(f => f.Key, f => f.Value, StringComparer.Ordinal),
                Tags = q.Tags.ToList(),
            };
            vm.Properties = PropertiesOf(q);
            return vm;
        }).ToList();
        _globals = inventory.GlobalProperties.ToDictionary(p => p.Key, p => new QubesdProp(false, TypeOf(p.Key), p.Value), StringComparer.Ordinal);
        _labels = inventory.Labels.ToDictionary(l => l.Key, l => l.Value, StringComparer.Ordinal);
    }

    /// <summary>The properties qubesd's GetAll reports: the stored ones (default=False) and the computed defaults this module reads.</summary>
    private static Dictionary<string, QubesdProp> PropertiesOf(Qube q)
    {
        var map = q.Properties.ToDictionary(p => p.Key, p => new QubesdProp(false, TypeOf(p.Key), p.Value), StringComparer.Ordinal);
        void Default(string name, string? value) => map.TryAdd(name, new QubesdProp(true, TypeOf(name), value ?? ""));
        var networking = q.Class is not (QubeClass.AdminVM or QubeClass.RemoteVM);
        if (q.Class == QubeClass.AdminVM)
        {
            Default("name", q.Name);
            Default("qid", q.Qid.ToString(CultureInfo.InvariantCulture));
        }
        if (networking)
        {
            if (map.TryGetValue("netvm", out var stored)) map["netvm"] = stored with { Value = q.NetVM ?? "" };
            Default("netvm", q.NetVM);
            Default("provides_network", "False");
            Default("ip", q.IP);
            Default("ip6", q.IPv6);
            Default("template_for_dispvms", "False");
        }
        if (q.Class != QubeClass.RemoteVM) Default("default_dispvm", q.DefaultDispVM);
        return map;
    }

    private VmState? Find(string name) => _vms.FirstOrDefault(v => v.Name == name);

    private List<FirewallRule> RulesOf(VmState vm)
    {
        vm.Rules ??= FirewallXml.Load(vm.FirewallPath!).Rules.ToList();
        return vm.Rules;
    }

    // qubesd writes firewall.xml whole on each change (mode 0664), the way FirewallXml renders it.
    private void WriteFirewall(VmState vm) =>
        QubesFirewall.Engine.Io.AtomicFile.WriteAllText(vm.FirewallPath!, FirewallXml.Render(vm.Rules!, _clock()),
            UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead);

    private IEnumerable<FirewallRule> Visible(IEnumerable<FirewallRule> rules)
    {
        var now = _clock();
        return rules.Where(r => !r.IsExpiredAt(now));
    }

    // ------------------------------------------------------------------ transport

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            _ = Task.Run(() => Serve(client));
        }
    }

    private async Task Serve(Socket client)
    {
        using var _ = client;
        try
        {
            var buffer = new MemoryStream();
            var chunk = new byte[16384];
            while (true)
            {
                var n = await client.ReceiveAsync(chunk, SocketFlags.None, _stop.Token);
                if (n == 0) break;
                if (buffer.Length + n > BufferSize)
                {
                    // qubesd: "request too long", transport.abort()
                    Interlocked.Increment(ref _oversized);
                    client.Close(0);
                    return;
                }
                buffer.Write(chunk, 0, n);
            }
            var reply = await Handle(buffer.ToArray());
            if (reply is null) return; // empty reply: close without a byte
            if (reply.Value.Truncate)
            {
                await client.SendAsync(reply.Value.Bytes.AsMemory(0, reply.Value.Bytes.Length / 2), SocketFlags.None);
                client.Close(0);
                return;
            }
            await client.SendAsync(reply.Value.Bytes, SocketFlags.None);
            client.Shutdown(SocketShutdown.Send);
        }
        catch (Exception) when (_stop.IsCancellationRequested)
        {
        }
        catch (SocketException)
        {
        }
    }

    private readonly record struct Reply(byte[] Bytes, bool Truncate = false);

    private async Task<Reply?> Handle(byte[] raw)
    {
        var nul = Array.IndexOf(raw, (byte)0);
        if (nul < 0) return null; // framing error: abort
        var header = Encoding.ASCII.GetString(raw, 0, nul);
        var payload = raw[(nul + 1)..];
        var parts = header.Split(' ', 4);
        if (parts.Length != 4 || parts[2] != "name") return null;
        var plus = parts[0].IndexOf('+');
        var method = plus < 0 ? parts[0] : parts[0][..plus];
        var arg = plus < 0 ? "" : parts[0][(plus + 1)..];
        var call = new RecordedCall(raw, method, arg, parts[1], parts[3], payload);
        _calls.Enqueue(call);
        if (LogPath is not null)
            lock (_calls) File.AppendAllText(LogPath, $"{call.Key} {call.Destination}\n");

        Fault? fault;
        lock (_gate)
        {
            fault = _faults.FirstOrDefault(f => (f.Method is null || f.Method == method) && (f.Destination is null || f.Destination == call.Destination));
            if (fault is not null)
            {
                _faults.Remove(fault);
                if (fault.Count > 1) _faults.Insert(0, fault with { Count = fault.Count - 1 });
            }
        }
        if (ConnectionLatency > TimeSpan.Zero) await Task.Delay(ConnectionLatency, _stop.Token);
        if (ServiceTime > TimeSpan.Zero)
        {
            await _serviceLoop.WaitAsync(_stop.Token);
            try
            {
                await Task.Delay(ServiceTime, _stop.Token);
            }
            finally
            {
                _serviceLoop.Release();
            }
        }
        switch (fault?.Kind)
        {
            case FaultKind.ExceptionReply:
                return new Reply(ExceptionBytes(fault.ExceptionClass, fault.Message));
            case FaultKind.EmptyReply:
                return null;
            case FaultKind.SlowReply:
                await Task.Delay(fault.Delay, _stop.Token);
                break;
        }

        byte[]? bytes;
        try
        {
            string? content;
            lock (_gate) content = Dispatch(call);
            bytes = content is null ? null : Encoding.UTF8.GetBytes("0\0" + content);
        }
        catch (QubesdFault f)
        {
            bytes = f.Empty ? null : ExceptionBytes(f.Class, f.Message);
        }
        AfterCall?.Invoke(this, call);
        if (bytes is null) return null;
        return new Reply(bytes, fault?.Kind == FaultKind.CloseMidReply);
    }

    private static byte[] ExceptionBytes(string cls, string message) => Encoding.UTF8.GetBytes($"2\0{cls}\0\0{message}\0");

    private sealed class QubesdFault(string cls, string message, bool empty = false) : Exception(message)
    {
        public string Class { get; } = cls;
        public bool Empty { get; } = empty;
    }

    private QubesdFault Protocol(string message) => new("ProtocolError", message, empty: !ProtocolErrorsAsExceptions);

    private static QubesdFault Unhandled() => new("ValueError", "", empty: true);

    // ------------------------------------------------------------------ methods

    private static readonly Regex FeatureName = new(@"\A[a-zA-Z0-9_.-]+\z", RegexOptions.CultureInvariant);
    private static readonly Regex FeatureValue = new(@"\A[\x20-\x7E]*\z", RegexOptions.CultureInvariant);

    // Each method's shape, as its @qubes.api.method decorator in core-admin qubes/api/admin.py declares it.
    private static readonly Dictionary<string, (bool? WantsArg, bool? WantsPayload, bool? DestAdminVm)> Known = new(StringComparer.Ordinal)
    {
            ["admin.vm.List"] = (false, false, null),
            ["admin.property.GetAll"] = (false, false, true),
            ["admin.property.List"] = (false, false, true),
            ["admin.property.Get"] = (true, false, true),
            ["admin.vm.property.GetAll"] = (false, false, null),
            ["admin.vm.property.List"] = (false, false, null),
            ["admin.vm.property.Get"] = (true, false, null),
            ["admin.vm.property.Set"] = (true, null, null),
            ["admin.vm.property.Reset"] = (true, false, null),
            ["admin.vm.feature.List"] = (false, false, null),
            ["admin.vm.feature.Get"] = (true, false, null),
            ["admin.vm.feature.Set"] = (true, null, null),
            ["admin.vm.feature.Remove"] = (true, false, null),
            ["admin.vm.tag.List"] = (false, false, null),
            ["admin.label.List"] = (false, false, true),
            ["admin.label.Get"] = (true, false, true),
            ["admin.vm.firewall.Get"] = (false, false, false),
            ["admin.vm.firewall.Set"] = (false, true, false),
            ["admin.vm.firewall.Reload"] = (false, false, false),
            ["admin.vm.Start"] = (false, false, null),
    };

    private string? Dispatch(RecordedCall call)
    {
        if (call.Source != "dom0") throw new QubesdFault("QubesVMNotFoundError", $"No such domain: '{call.Source}'");
        var dest = Find(call.Destination) ?? throw new QubesdFault("QubesVMNotFoundError", $"No such domain: '{call.Destination}'");
        if (!SupportsGetAll && call.Method.EndsWith(".GetAll", StringComparison.Ordinal) || !Known.TryGetValue(call.Method, out var shape))
            throw Protocol($"no such method: '{call.Method}'");
        if (shape.WantsPayload == true && call.Payload.Length == 0) throw Protocol("expected payload");
        if (shape.WantsPayload == false && call.Payload.Length != 0) throw Protocol("unexpected payload");
        if (shape.WantsArg == true && call.Argument.Length == 0) throw Protocol("expected an argument");
        if (shape.WantsArg == false && call.Argument.Length != 0) throw Protocol("unexpected argument");
        if (shape.DestAdminVm == true && dest.Class != QubeClass.AdminVM) throw Protocol("expected destination to be AdminVM");
        if (shape.DestAdminVm == false && dest.Class == QubeClass.AdminVM) throw Protocol("expected destination to not be AdminVM");
        var arg = call.Argument;

        switch (call.Method)
        {
            case "admin.vm.List":
                return string.Concat((dest.Name == "dom0" ? _vms : [dest]).Select(v =>
                    $"{v.Name} class={v.ClassName} state={v.State}" + (ListWithUuid ? $" uuid={v.Uuid}" : "") + "\n"));
            case "admin.property.GetAll":
                return GetAll(_globals);
            case "admin.property.List":
                return string.Concat(_globals.Keys.Order(StringComparer.Ordinal).Select(k => k + "\n"));
            case "admin.property.Get":
                return _globals.TryGetValue(arg, out var g) ? Serialize(g) : throw new QubesdFault("QubesNoSuchPropertyError", $"Invalid property '{arg}' of Qubes");
            case "admin.vm.property.GetAll":
                return GetAll(dest.Properties);
            case "admin.vm.property.List":
                return string.Concat(dest.Properties.Keys.Order(StringComparer.Ordinal).Select(k => k + "\n"));
            case "admin.vm.property.Get":
                return dest.Properties.TryGetValue(arg, out var p) ? Serialize(p) : throw new QubesdFault("QubesNoSuchPropertyError", $"Invalid property '{arg}' of {dest.Name}");
            case "admin.vm.property.Set":
            case "admin.vm.property.Reset":
            {
                var isSet = call.Method.EndsWith("Set", StringComparison.Ordinal);
                var oldNetVm = arg == "netvm" ? dest.Properties.GetValueOrDefault("netvm")?.Value ?? "" : null;
                if (arg == "netvm" && isSet)
                {
                    // core-admin net.py on_property_pre_set_netvm: a running qube cannot be attached to a qube that does not run.
                    var target = Encoding.ASCII.GetString(call.Payload);
                    // (qubesd checks the value first: a qube that does not provide network is refused as a bad value.)
                    if (target.Length > 0 && dest.State == PowerState.Running && Find(target) is { } t && t.State is not (PowerState.Running or PowerState.Paused)
                        && t.Properties.GetValueOrDefault("provides_network")?.Value == "True")
                        throw new QubesdFault("QubesVMNotStartedError", $"Cannot dynamically attach to stopped qube {target}");
                }
                try
                {
                    if (isSet) QubesXml.SetProperty(_root.QubesXmlPath, dest.Name, arg, Encoding.ASCII.GetString(call.Payload));
                    else QubesXml.ResetProperty(_root.QubesXmlPath, dest.Name, arg);
                }
                catch (QubesFirewallException ex)
                {
                    throw new QubesdFault("QubesPropertyValueError", ex.Message);
                }
                Seed();
                if (oldNetVm is not null)
                {
                    // Setting netvm fires its handlers even for the same value (detach, attach, firewall reload);
                    // a reset fires them only when the default differs from the value it replaces.
                    var newNetVm = dest.Properties.GetValueOrDefault("netvm")?.Value ?? "";
                    if (dest.State == PowerState.Running && (isSet || newNetVm != oldNetVm))
                    {
                        if (oldNetVm.Length > 0) _networkEvents.Enqueue($"detach {dest.Name} {oldNetVm}");
                        if (newNetVm.Length > 0)
                        {
                            _networkEvents.Enqueue($"attach {dest.Name} {newNetVm}");
                            try
                            {
                                _root.SyncFirewall(dest.Name);
                            }
                            catch (QubesFirewallException)
                            {
                                // qubesd logs a failed firewall reload; the attach stands.
                            }
                        }
                    }
                }
                return "";
            }
            case "admin.vm.feature.List":
                return string.Concat(dest.Features.Keys.Select(k => k + "\n"));
            case "admin.vm.feature.Get":
                return dest.Features.TryGetValue(arg, out var f) ? f : throw new QubesdFault("QubesFeatureNotFoundError", $"Feature not set for domain {dest.Name}: {arg}");
            case "admin.vm.feature.Set":
            {
                if (call.Payload.Any(b => b > 0x7F)) throw Protocol("Feature value contains non-ASCII characters");
                var value = Encoding.ASCII.GetString(call.Payload);
                if (!FeatureName.IsMatch(arg)) throw Protocol("feature name contains illegal characters");
                if (!FeatureValue.IsMatch(value)) throw Protocol($"{arg} value contains illegal characters");
                QubesXml.SetFeature(_root.QubesXmlPath, dest.Name, arg, value);
                dest.Features[arg] = value;
                Seed(); // computed properties follow features (ip6 from the ipv6 feature along the chain)
                return "";
            }
            case "admin.vm.feature.Remove":
                if (!dest.Features.Remove(arg)) throw new QubesdFault("QubesFeatureNotFoundError", $"Feature not set for domain {dest.Name}: {arg}");
                QubesXml.RemoveFeature(_root.QubesXmlPath, dest.Name, arg);
                Seed();
                return "";
            case "admin.vm.tag.List":
                return string.Concat(dest.Tags.Select(t => t + "\n"));
            case "admin.label.List":
                return string.Concat(_labels.Keys.Select(k => k + "\n"));
            case "admin.label.Get":
                return _labels.TryGetValue(arg, out var color) ? color : throw new QubesdFault("QubesLabelNotFoundError", $"Label does not exist: {arg}");
            case "admin.vm.firewall.Get":
                return string.Concat(Visible(RulesOf(dest)).Select(r => r.Text + "\n"));
            case "admin.vm.firewall.Set":
            {
                if (call.Payload.Any(b => b > 0x7F)) throw Protocol("Rules contains non-ASCII characters");
                var rules = new List<FirewallRule>();
                foreach (var line in SplitLines(Encoding.ASCII.GetString(call.Payload)))
                {
                    // qubesd's Rule.from_api_string raises plain ValueErrors: an unhandled error, an empty reply.
                    if (!RuleText.TryParse(line, out var rule, out _, _clock())) throw Unhandled();
                    rules.Add(rule!);
                }
                dest.Rules = rules;
                WriteFirewall(dest);
                return "";
            }
            case "admin.vm.firewall.Reload":
                try
                {
                    _root.SyncFirewall(dest.Name);
                }
                catch (QubesFirewallException ex) when (ex.ErrorId == "NoNetVM")
                {
                    // qubesd: a qube without netvm has no one to send rules to; the reload does nothing.
                }
                return "";
            case "admin.vm.Start":
                Start(dest);
                return "";
        }
        throw Protocol($"no such method: '{call.Method}'");
    }

    // qubesvm.start: a halted netvm (and its own halted netvm, ...) is started first.
    private void Start(VmState vm)
    {
        if (vm.State == PowerState.Running) return;
        if (vm.Properties.GetValueOrDefault("netvm")?.Value is { Length: > 0 } netvm && Find(netvm) is { } up) Start(up);
        vm.State = PowerState.Running;
        _root.SetPowerState(vm.Name, PowerState.Running);
        _networkEvents.Enqueue($"start {vm.Name}");
    }

    // Python's str.splitlines for the separators a rule payload can hold.
    private static IEnumerable<string> SplitLines(string s)
    {
        var lines = s.Split('\n');
        return s.EndsWith('\n') ? lines[..^1] : lines;
    }

    private static string Serialize(QubesdProp p) => $"default={(p.IsDefault ? "True" : "False")} type={p.Type} {p.Value}";

    private static string GetAll(Dictionary<string, QubesdProp> props) =>
        string.Concat(props.OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => $"{p.Key} {Serialize(p.Value).Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)}\n"));

    public void Dispose()
    {
        _stop.Cancel();
        try { _listener.Close(); } catch (SocketException) { }
        try { _acceptLoop.Wait(TimeSpan.FromSeconds(2)); } catch (AggregateException) { }
        try { File.Delete(SocketPath); } catch (IOException) { }
    }
}
