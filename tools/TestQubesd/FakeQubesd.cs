using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using QubesFirewall.TestQubesd.CoreAdmin;

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
/// module makes. It shares no code with the module: what qubesd checks and stores is written here from
/// core-admin (see <c>CoreAdmin/</c> and tools/TestQubesd/README.md, each rule with its file and line), so
/// a live-backend test compares two independent readings of qubesd. Its state is loaded from an offline
/// Qubes root (qubes.xml, firewall.xml files, power states in the state folder) and kept in memory, as
/// qubesd keeps it; like qubesd, it writes what changes back (firewall.xml on Set, qubes.xml on feature and
/// property changes, a running network qube's QubesDB in the state folder when a client's firewall is
/// reloaded), so tests can compare files whichever backend made the change. Requests over 65,536 bytes are
/// aborted; unknown methods, unexpected arguments or payloads refused as ProtocolError.
/// </summary>
public sealed class FakeQubesd : IDisposable
{
    public const int BufferSize = 65536;

    private readonly object _gate = new();
    private readonly QubesdStore _store;
    private readonly StateFolder _state;
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _acceptLoop;
    private readonly List<Fault> _faults = [];
    private readonly ConcurrentQueue<RecordedCall> _calls = new();
    private readonly Func<DateTimeOffset> _clock;
    private int _oversized;

    public FakeQubesd(string rootPath, string socketPath, Func<DateTimeOffset>? clock = null)
    {
        _clock = clock ?? (() => DateTimeOffset.UtcNow);
        RootPath = Path.GetFullPath(rootPath);
        _store = new QubesdStore(Path.Combine(RootPath, "qubes.xml"));
        _state = new StateFolder(RootPath);
        foreach (var vm in _store.Domains) vm.PowerState = _state.ReadPowerState(vm.Name);
        SocketPath = socketPath;
        if (File.Exists(socketPath)) File.Delete(socketPath);
        // Bound and listening under a temporary name, then renamed: the socket path appears only once connections
        // are accepted (a client that waits for the path, as TestBackend.ps1 does, is never refused).
        var bound = socketPath + "~";
        if (File.Exists(bound)) File.Delete(bound);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(bound));
        _listener.Listen(64);
        File.Move(bound, socketPath, overwrite: true);
        _acceptLoop = Task.Run(AcceptLoop);
    }

    public string SocketPath { get; }

    public string RootPath { get; }

    /// <summary>Before R4.3 qubesd answers ProtocolError and PermissionDenied with an empty reply; later ones with an exception reply.</summary>
    public bool ProtocolErrorsAsExceptions { get; set; }

    /// <summary>False: behave like R4.0's qubesd, which has no admin.vm.property.GetAll / admin.property.GetAll.</summary>
    public bool SupportsGetAll { get; set; } = true;

    /// <summary>
    /// Behave like qubesd before core-admin commit f92669dd (April 2026), which let port 65536 through
    /// (DstPorts checked <c>port &gt; 65536</c>): it reads and accepts such rules, the newer one fails on them.
    /// </summary>
    public bool AcceptsPort65536 { get; set; }

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

    /// <summary>
    /// Changes a qube's rule list behind the client's back (another admin's edit): the rules as
    /// admin.vm.firewall.Get lines, changed, then stored as a Set stores them (each line parsed by qubesd's grammar).
    /// </summary>
    public void EditRules(string vmName, Func<List<string>, List<string>> change)
    {
        lock (_gate)
        {
            var vm = _store.Find(vmName) ?? throw new ArgumentException($"no qube {vmName}");
            var now = _clock();
            SetRules(vm, change(RulesOf(vm).Select(r => r.ApiRule(now)).OfType<string>().ToList()).Select(l => QubesdRule.FromApiString(l, AcceptsPort65536)).ToList());
        }
    }

    /// <summary>The rule lines the server holds for a qube (what Get returns).</summary>
    public IReadOnlyList<string> RuleLines(string vmName)
    {
        lock (_gate)
        {
            var now = _clock();
            return RulesOf(_store.Find(vmName)!).Select(r => r.ApiRule(now)).OfType<string>().ToList();
        }
    }

    /// <summary>Sets a qube's power state as libvirt would report it (the state's name: Halted, Running, Paused, ...), in memory and in the state folder.</summary>
    public void SetPowerState(string vmName, string state)
    {
        lock (_gate)
        {
            _store.Find(vmName)!.PowerState = state;
            _state.WritePowerState(vmName, state);
        }
    }

    /// <summary>The same, from any enum whose member names are the power states (the module's PowerState, for one).</summary>
    public void SetPowerState(string vmName, Enum state) => SetPowerState(vmName, state.ToString());

    // ------------------------------------------------------------------ state

    // The qube's directory (qubes/vm/qubesvm.py dir_path: vm-templates/ for templates, appvms/ for the others).
    private string FirewallPath(QubesdDomain vm) =>
        Path.Combine(RootPath, vm.Class == "TemplateVM" ? "vm-templates" : "appvms", vm.Name, "firewall.xml");

    private List<QubesdRule> RulesOf(QubesdDomain vm) => vm.Rules ??= QubesdFirewall.Load(FirewallPath(vm), AcceptsPort65536);

    // admin.vm.firewall.Set (admin.py l.2265-2281): the list replaces the old one, Firewall.save writes it and
    // fires firewall-changed (firewall.py l.627), which reloads the rules into the network qube (net.py l.761).
    private void SetRules(QubesdDomain vm, List<QubesdRule> rules)
    {
        var now = _clock();
        QubesdFirewall.Save(FirewallPath(vm), rules, now);
        vm.Rules = rules; // in memory expired rules stay (qdb_entries numbers by position in this list)
        OnFirewallChanged(vm);
    }

    // on_firewall_changed (net.py l.761-766): a running qube with a netvm has its rules reloaded there.
    private void OnFirewallChanged(QubesdDomain vm)
    {
        if (vm.IsRunning && _store.NetVm(vm) is { } netvm) ReloadFirewallFor(netvm, vm);
    }

    // reload_firewall_for_vm (net.py l.506-525): only into a running network qube; per address family the
    // client has, rm "/qubes-firewall/<ip>/", write the qdb_entries under it, then the empty "/qubes-firewall/<ip>".
    private void ReloadFirewallFor(QubesdDomain netvm, QubesdDomain vm)
    {
        if (!netvm.IsRunning) return;
        var rules = RulesOf(vm);
        var now = _clock();
        foreach (var (family, ip) in new[] { (4, _store.Ip(vm)), (6, _store.Ip6(vm)) })
        {
            if (ip is null) continue;
            var baseDir = $"/qubes-firewall/{ip}/";
            var writes = QubesdFirewall.QubesDbEntries(rules, family, now).Select(e => new KeyValuePair<string, string>(baseDir + e.Key, e.Value)).ToList();
            writes.Add(new(baseDir[..^1], ""));
            _state.UpdateQubesDb(netvm.Name, [baseDir], writes);
        }
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
        catch (QubesdError f)
        {
            bytes = f.Empty ? null : ExceptionBytes(f.Class, f.Message);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // anything else is an unhandled exception in qubesd: logged, and the connection closed without a reply
            Console.Error.WriteLine($"TestQubesd: unhandled {e.GetType().Name} in {call.Key}: {e.Message}");
            bytes = null;
        }
        AfterCall?.Invoke(this, call);
        if (bytes is null) return null;
        return new Reply(bytes, fault?.Kind == FaultKind.CloseMidReply);
    }


    private static byte[] ExceptionBytes(string cls, string message) => Encoding.UTF8.GetBytes($"2\0{cls}\0\0{message}\0");

    // Errors as QubesDaemonProtocol.respond (qubes/api/__init__.py l.442-520) answers them: ProtocolError and
    // PermissionDenied with an exception reply (an empty one before R4.3), any QubesException with an exception
    // reply, anything else (a ValueError of the firewall parser, say) with nothing: the connection is closed.
    private QubesdError Protocol(string message) => new("ProtocolError", message, empty: !ProtocolErrorsAsExceptions);

    private static QubesdError Unhandled(string message) => new("ValueError", message, empty: true);

    // ------------------------------------------------------------------ methods

    // admin.vm.feature.Set (admin.py l.1502-1523): name [a-zA-Z0-9_.-]+, value printable ASCII.
    private static readonly Regex FeatureName = new(@"\A[a-zA-Z0-9_.-]+\z", RegexOptions.CultureInvariant);
    private static readonly Regex FeatureValue = new(@"\A[\x20-\x7E]*\z", RegexOptions.CultureInvariant);

    // Each method's shape, as its @qubes.api.method decorator in core-admin qubes/api/admin.py declares it
    // (vm.List l.130, property.* l.152-437, vm.Start l.1225, label.* l.1112-1140, tag.List l.772,
    // feature.* l.1374-1500, firewall.* l.2240-2290); QubesMgmt.execute checks them (api/__init__.py l.267-297).
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
        if (call.Source != "dom0") throw new QubesdError("QubesVMNotFoundError", $"No such domain: '{call.Source}'");
        var dest = _store.Find(call.Destination) ?? throw new QubesdError("QubesVMNotFoundError", $"No such domain: '{call.Destination}'");
        if (!SupportsGetAll && call.Method.EndsWith(".GetAll", StringComparison.Ordinal) || !Known.TryGetValue(call.Method, out var shape))
            throw Protocol($"no such method: '{call.Method}'");
        if (shape.WantsPayload == true && call.Payload.Length == 0) throw Protocol("expected payload");
        if (shape.WantsPayload == false && call.Payload.Length != 0) throw Protocol("unexpected payload");
        if (shape.WantsArg == true && call.Argument.Length == 0) throw Protocol("expected an argument");
        if (shape.WantsArg == false && call.Argument.Length != 0) throw Protocol("unexpected argument");
        if (shape.DestAdminVm == true && !dest.IsAdminVm) throw Protocol("expected destination to be AdminVM");
        if (shape.DestAdminVm == false && dest.IsAdminVm) throw Protocol("expected destination to not be AdminVM");
        var arg = call.Argument;

        switch (call.Method)
        {
            case "admin.vm.List":
                // vm_list (admin.py l.138-150): dom0 lists every qube, sorted: dom0 first (AdminVM.__lt__, qubes/vm/adminvm.py
                // l.147; QubesVM.__lt__, qubesvm.py l.1218), then by name (BaseVM.__lt__, qubes/vm/__init__.py l.313)
                return string.Concat((dest.IsAdminVm ? _store.Domains : [dest]).OrderBy(v => !v.IsAdminVm).ThenBy(v => v.Name, StringComparer.Ordinal).Select(v =>
                    $"{v.Name} class={v.Class} state={v.PowerState}" + (ListWithUuid ? $" uuid={v.Uuid}" : "") + "\n"));
            case "admin.property.GetAll":
                return GetAll(_store.Globals.OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => (g.Key, false, g.Value)));
            case "admin.property.List":
                return string.Concat(_store.Globals.Keys.Order(StringComparer.Ordinal).Select(k => k + "\n"));
            case "admin.property.Get":
                return _store.Globals.TryGetValue(arg, out var g) ? Serialize(arg, false, g) : throw new QubesdError("QubesNoSuchPropertyError", $"Invalid property '{arg}' of Qubes");
            case "admin.vm.property.GetAll":
                return GetAll(_store.PropertiesOf(dest));
            case "admin.vm.property.List":
                return string.Concat(_store.PropertiesOf(dest).Select(p => p.Name + "\n"));
            case "admin.vm.property.Get":
            {
                QubesdStore.RequireKnown(dest, arg);
                var p = _store.PropertiesOf(dest).FirstOrDefault(p => p.Name == arg);
                // _serialize_property (admin.py l.230-231): a property without a value (here: one not modelled) is "default=True type=T "
                return p.Name is null ? $"default=True type={QubesdStore.TypeOf(arg)} " : Serialize(p.Name, p.IsDefault, p.Value);
            }
            case "admin.vm.property.Set":
                SetProperty(dest, arg, call.Payload);
                return "";
            case "admin.vm.property.Reset":
                ResetProperty(dest, arg);
                return "";
            case "admin.vm.feature.List":
                return string.Concat(dest.Features.Keys.Select(k => k + "\n"));
            case "admin.vm.feature.Get":
                return dest.Features.TryGetValue(arg, out var f) ? f : throw new QubesdError("QubesFeatureNotFoundError", $"Feature not set for domain {dest.Name}: {arg}");
            case "admin.vm.feature.Set":
                SetFeature(dest, arg, call.Payload);
                return "";
            case "admin.vm.feature.Remove":
                // vm_feature_remove (admin.py l.1484-1492); Features.__delitem__ (features.py l.54)
                if (!dest.Features.ContainsKey(arg)) throw new QubesdError("QubesFeatureNotFoundError", $"Feature not set for domain {dest.Name}: {arg}");
                _store.StoreFeature(dest, arg, null);
                _store.Save();
                return "";
            case "admin.vm.tag.List":
                // vm_tag_list (admin.py l.780-785): sorted
                return string.Concat(dest.Tags.Order(StringComparer.Ordinal).Select(t => t + "\n"));
            case "admin.label.List":
                return string.Concat(_store.Labels.Keys.Select(k => k + "\n"));
            case "admin.label.Get":
                return _store.Labels.TryGetValue(arg, out var color) ? color : throw new QubesdError("QubesLabelNotFoundError", $"Label does not exist: {arg}");
            case "admin.vm.firewall.Get":
            {
                // vm_firewall_get (admin.py l.2248-2255): one api_rule line per rule, expired ones left out
                var now = _clock();
                return string.Concat(RulesOf(dest).Select(r => r.ApiRule(now)).OfType<string>().Select(l => l + "\n"));
            }
            case "admin.vm.firewall.Set":
            {
                // vm_firewall_set (admin.py l.2265-2281): ASCII or ProtocolError; splitlines; each line through
                // Rule.from_api_string, whose plain ValueErrors are unhandled: an empty reply, nothing stored.
                if (call.Payload.Any(b => b > 0x7F)) throw Protocol("Rules contains non-ASCII characters");
                var rules = new List<QubesdRule>();
                foreach (var line in PythonText.SplitLines(Encoding.ASCII.GetString(call.Payload)))
                {
                    try
                    {
                        rules.Add(QubesdRule.FromApiString(line, AcceptsPort65536));
                    }
                    catch (RuleValueError e)
                    {
                        throw Unhandled(e.Message);
                    }
                }
                SetRules(dest, rules);
                return "";
            }
            case "admin.vm.firewall.Reload":
                // vm_firewall_reload (admin.py l.2291-2294): fires firewall-changed
                OnFirewallChanged(dest);
                return "";
            case "admin.vm.Start":
                Start(dest);
                return "";
        }
        throw Protocol($"no such method: '{call.Method}'");
    }

    // vm_feature_set (admin.py l.1502-1523), then Features.__setitem__ (features.py l.59-95) with the
    // domain-feature-pre-set and domain-feature-set handlers that can refuse, then app.save().
    private void SetFeature(QubesdDomain vm, string name, byte[] payload)
    {
        if (payload.Any(b => b > 0x7F)) throw Protocol("Feature value contains non-ASCII characters");
        var value = Encoding.ASCII.GetString(payload);
        if (!FeatureName.IsMatch(name)) throw Protocol("feature name contains illegal characters");
        if (!FeatureValue.IsMatch(value)) throw Protocol($"{name} value contains illegal characters");
        // services.py on_domain_feature_pre_set (l.114-139): service.<name>, before anything is stored
        if (name.StartsWith("service.", StringComparison.Ordinal))
        {
            var service = name["service.".Length..];
            if (service.Length == 0) throw new QubesdError("QubesValueError", "Service name cannot be empty");
            if (service is "." or "..") throw new QubesdError("QubesValueError", "Service name cannot be \".\" or \"..\"");
            if (service.Length > 48 && !service.StartsWith("app-dispvm.", StringComparison.Ordinal))
                throw new QubesdError("QubesValueError", "Service name must not exceed 48 bytes");
        }
        vm.Features[name] = value;
        // vm_config.py on_domain_feature_set (l.45-70): runs after the value is in the dict, so a refused
        // vm-config.<name> stays set in memory, unsaved (app.save() is not reached).
        if (name.StartsWith("vm-config.", StringComparison.Ordinal))
        {
            var config = name["vm-config.".Length..];
            if (config.Length > 52) throw new QubesdError("QubesValueError", "VM config name must not exceed 46 bytes");
            if (config.Length == 0) throw new QubesdError("QubesValueError", "Empty config name not allowed");
            if (!char.IsAsciiLetter(config[0])) throw new QubesdError("QubesValueError", "Config name must start with an ASCII letter");
        }
        _store.StoreFeature(vm, name, value);
        _store.Save();
    }

    // _property_set (admin.py l.356-366): known property, sanitize, setattr (setter, pre-set and set
    // events), app.save(). netvm's events are net.py's (l.601-661): a running qube cannot move to a network
    // qube that does not run (QubesVMNotStartedError); a paused one records deferred-netvm-original; a
    // running one is detached from its old netvm (when that runs), attached to the new one, which reloads
    // its firewall. These fire even when the value does not change.
    private void SetProperty(QubesdDomain vm, string name, byte[] payload)
    {
        QubesdStore.RequireKnown(vm, name);
        if (name is "name" or "qid" or "uuid" or "dispid")
            throw Unhandled($"property '{name}' is write-once and already set"); // an AttributeError: unhandled
        var stored = _store.Sanitize(vm, name, payload);
        if (name != "netvm")
        {
            _store.StoreProperty(vm, name, stored);
            _store.Save();
            return;
        }
        var oldNetVm = _store.NetVm(vm);
        var newNetVm = stored.Length == 0 ? null : _store.Find(stored);
        PreSetNetVm(vm, oldNetVm, newNetVm);
        _store.StoreProperty(vm, name, stored);
        SetNetVm(vm, newNetVm);
        _store.Save();
    }

    // _property_reset (admin.py l.429-436), for netvm with net.py on_property_pre_reset_netvm (l.568-584:
    // the default is checked as a new value would be; nothing fires if it equals the old value) and
    // on_property_reset_netvm (l.586-599).
    private void ResetProperty(QubesdDomain vm, string name)
    {
        QubesdStore.RequireKnown(vm, name);
        if (name is "name" or "qid" or "uuid" or "dispid" or "label" or "template")
            throw Unhandled($"property '{name}' has no default or cannot be reset");
        if (name != "netvm")
        {
            _store.StoreProperty(vm, name, null);
            _store.Save();
            return;
        }
        var oldNetVm = _store.NetVm(vm);
        var saved = vm.Properties.GetValueOrDefault("netvm");
        vm.Properties.Remove("netvm");
        var newNetVm = _store.NetVm(vm);
        if (saved is not null) vm.Properties["netvm"] = saved;
        if (newNetVm is not null)
        {
            // _setter_netvm on the default: it must provide network and close no loop
            _store.Sanitize(vm, "netvm", Encoding.ASCII.GetBytes(newNetVm.Name));
        }
        var changes = newNetVm != oldNetVm;
        if (changes) PreSetNetVm(vm, oldNetVm, newNetVm);
        _store.StoreProperty(vm, name, null);
        if (changes) SetNetVm(vm, newNetVm);
        _store.Save();
    }

    // on_property_pre_set_netvm (net.py l.601-633)
    private void PreSetNetVm(QubesdDomain vm, QubesdDomain? oldNetVm, QubesdDomain? newNetVm)
    {
        if (newNetVm is not null && vm.IsRunning && !newNetVm.IsRunning)
            throw new QubesdError("QubesVMNotStartedError", $"Cannot dynamically attach to stopped qube {newNetVm.Name}");
        var deferred = vm.Features.ContainsKey("deferred-netvm-original");
        if (vm.IsPaused)
        {
            if (!deferred) _store.StoreFeature(vm, "deferred-netvm-original", oldNetVm?.Name ?? "");
            return;
        }
        if (!deferred && (oldNetVm is null || !(vm.IsRunning && oldNetVm.IsRunning))) return;
        // detach_network (l.459-491)
        _networkEvents.Enqueue($"detach {vm.Name} {oldNetVm?.Name}");
    }

    // on_property_set_netvm (net.py l.635-656): a running qube is attached (unless paused) and its new
    // netvm's net-domain-connect handler (l.658-661) reloads the qube's firewall there.
    private void SetNetVm(QubesdDomain vm, QubesdDomain? newNetVm)
    {
        if (newNetVm is null || !vm.IsRunning) return;
        if (!vm.IsPaused) _networkEvents.Enqueue($"attach {vm.Name} {newNetVm.Name}");
        ReloadFirewallFor(newNetVm, vm);
    }

    // QubesVM.start (qubes/vm/qubesvm.py l.1397-1480): only a Halted qube starts; the feature prohibit-start
    // refuses; a halted netvm is started first. Starting fires domain-pre-spawn (net.py on_pre_spawn, l.768:
    // the qube's rules into its netvm) and domain-qdb-create (net.py l.747-759: a network qube gets the rules
    // of each running client).
    private void Start(QubesdDomain vm)
    {
        if (vm.PowerState != "Halted") return;
        if (vm.Features.GetValueOrDefault("prohibit-start") is { Length: > 0 } why)
            throw new QubesdError("QubesException", $"Qube start is prohibited. Rationale: {why}");
        var netvm = _store.NetVm(vm);
        if (netvm is not null && netvm.Qid != 0 && !netvm.IsRunning) Start(netvm);
        vm.PowerState = "Running";
        _state.WritePowerState(vm.Name, "Running");
        _networkEvents.Enqueue($"start {vm.Name}");
        if (netvm is not null) ReloadFirewallFor(netvm, vm);
        if (_store.ProvidesNetwork(vm))
            foreach (var client in _store.ConnectedVms(vm).Where(c => c.IsRunning).ToList()) ReloadFirewallFor(vm, client);
    }

    // _serialize_property (admin.py l.214-236): "default=True|False type=T value"
    private static string Serialize(string name, bool isDefault, string value) => $"default={(isDefault ? "True" : "False")} type={QubesdStore.TypeOf(name)} {value}";

    // _property_get_all (admin.py l.262-275): "name serialized" lines, backslash and newline escaped
    private static string GetAll(IEnumerable<(string Name, bool IsDefault, string Value)> props) =>
        string.Concat(props.Select(p => $"{p.Name} {Serialize(p.Name, p.IsDefault, p.Value).Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)}\n"));

    public void Dispose()
    {
        _stop.Cancel();
        try { _listener.Close(); } catch (SocketException) { }
        try { _acceptLoop.Wait(TimeSpan.FromSeconds(2)); } catch (AggregateException) { }
        try { File.Delete(SocketPath); } catch (IOException) { }
    }
}
