using System.Collections;
using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Trust;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.AdminApi;

/// <summary>
/// The live dom0 backend: every read and write through qubesd's Admin API (never a file behind
/// qubesd's back), every change inside a qube through qvm-run with fixed commands.
/// <para>
/// Calls, per operation: the inventory is <c>admin.vm.List</c>, then one <c>admin.vm.property.GetAll</c> per qube
/// when something first looks at that qube (<c>admin.property.GetAll</c> only if the global properties are read),
/// read once per backend instance (one cmdlet invocation)
/// and read again after this backend changed a property, the power state or a feature other than the module's own
/// (<c>qubesfirewall.*</c>, <c>vm-config.qubesfw.*</c>: what it set of those is known); a qube's features,
/// tags and the label colours are read only when first used (<c>feature.List</c>, then one <c>feature.Get</c>
/// per feature asked for that the qube has; <c>tag.List</c>; <c>label.List</c> + <c>label.Get</c> each); its
/// features can be looked at without its properties (<see cref="QubesInventory.Glance"/>). A firewall edit is a Get when it is
/// planned, a Get just before the Set (refused if the list changed since the plan) and the Set.
/// </para>
/// </summary>
public sealed partial class AdminApiBackend : IQubesBackend
{
    private readonly IQubeCommandRunner _runner;
    private readonly Func<DateTimeOffset> _clock;
    private QubesInventory? _inventory;
    private Dictionary<string, LazyFeatures> _features = new(StringComparer.Ordinal);
    private bool? _getAllSupported;

    public AdminApiBackend(QubesdClient client, IQubeCommandRunner? runner = null, Func<DateTimeOffset>? clock = null)
    {
        Client = client;
        _runner = runner ?? new QvmRunCommandRunner();
        _clock = clock ?? (() => DateTimeOffset.UtcNow);
    }

    public QubesdClient Client { get; }

    public string Description => $"qubesd at {Client.SocketPath}";

    /// <summary>The Admin API calls made so far (the cost -Verbose reports).</summary>
    public long? CallCount => Client.CallCount;

    /// <summary>One admin.vm.List, not the whole inventory (one GetAll per qube).</summary>
    public IReadOnlyList<string> ListQubeNames() => ListQubes().Select(e => e.Name).ToList();

    /// <summary>How long a command inside a qube may run.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>How much a qube may answer (a file read back, a script's output); over it the read fails and nothing is written.</summary>
    public QubeAnswerLimits AnswerLimits { get; set; } = new();

    // ------------------------------------------------------------------ inventory

    public QubesInventory GetInventory() => _inventory ??= ReadInventory();

    /// <summary>Forgets the cached inventory; the next <see cref="GetInventory"/> reads it again.</summary>
    public void Invalidate()
    {
        _inventory = null;
        _features = new(StringComparer.Ordinal);
    }

    // admin.vm.List now; each qube's GetAll when the plan first looks at it, the global properties and labels only if
    // someone reads them: a cmdlet on one qube makes 2 calls for the inventory, a listing of N qubes 1 + N.
    private QubesInventory ReadInventory()
    {
        _stampAtRead = ReadDeploymentStamp();
        var list = ListQubes();
        var entries = list.ToDictionary(e => e.Name, StringComparer.Ordinal);
        var globals = new LazyMap(() => ReadProperties(global: true, "dom0").Values.Where(p => !p.IsDefault)
            .ToDictionary(p => p.Name, p => p.Value, StringComparer.Ordinal));
        // one features reader per qube, shared by its glance and the qube once loaded: each name and value is read once
        var features = _features;
        LazyFeatures FeaturesOf(string name) => features.TryGetValue(name, out var f) ? f : features[name] = new LazyFeatures(this, name);
        return new QubesInventory(list.Select(e => e.Name).ToList(), name => BuildQube(entries[name], ReadProperties(global: false, name), FeaturesOf(name)),
            globals, new LazyMap(ReadLabels), glance: name => new QubeGlance(ParseClass(entries[name].ClassName), FeaturesOf(name)));
    }

    private static QubeClass ParseClass(string className) => className switch
    {
        "AdminVM" => QubeClass.AdminVM,
        "TemplateVM" => QubeClass.TemplateVM,
        "StandaloneVM" => QubeClass.StandaloneVM,
        "DispVM" => QubeClass.DispVM,
        "RemoteVM" => QubeClass.RemoteVM,
        _ => QubeClass.AppVM,
    };

    /// <summary><c>admin.vm.List</c> on dom0: every qube with its class and power state, in qubesd's order.</summary>
    public IReadOnlyList<QubesdVmListEntry> ListQubes() =>
        AdminApiReplies.ParseVmList(Client.CallText("admin.vm.List", "dom0"), "admin.vm.List (on dom0)");

    /// <summary><c>admin.vm.List</c> on one qube: its class and current power state.</summary>
    public QubesdVmListEntry ReadListEntry(string vmName)
    {
        var what = QubesdClient.Describe("admin.vm.List", null, vmName);
        var entries = AdminApiReplies.ParseVmList(Client.CallText("admin.vm.List", QubeName.Validate(vmName)), what);
        return entries.Count == 1 && entries[0].Name == vmName ? entries[0] : throw AdminApiReplies.Bad(what, "it does not list exactly that qube");
    }

    /// <summary>
    /// All properties of a qube (or the global ones) with one <c>GetAll</c>; a qubesd without GetAll
    /// (R4.0) is asked <c>property.List</c> and then <c>property.Get</c> for each.
    /// </summary>
    public IReadOnlyDictionary<string, QubesdProperty> ReadProperties(bool global, string vmName)
    {
        var prefix = global ? "admin.property." : "admin.vm.property.";
        var dest = global ? "dom0" : QubeName.Validate(vmName);
        if (_getAllSupported != false)
        {
            try
            {
                var all = AdminApiReplies.ParseGetAll(Client.CallText(prefix + "GetAll", dest), QubesdClient.Describe(prefix + "GetAll", null, dest));
                _getAllSupported = true;
                return all;
            }
            catch (QubesFirewallException ex) when (_getAllSupported is null && IsUnknownMethod(ex))
            {
                _getAllSupported = false;
            }
        }
        var names = AdminApiReplies.ParseNames(Client.CallText(prefix + "List", dest), QubesdClient.Describe(prefix + "List", null, dest));
        var map = new Dictionary<string, QubesdProperty>(StringComparer.Ordinal);
        foreach (var name in names)
            map[name] = AdminApiReplies.ParseProperty(name, Client.CallText(prefix + "Get", dest, name), QubesdClient.Describe(prefix + "Get", name, dest));
        return map;
    }

    // qubesd before R4.3 answers an unknown method with nothing; later ones with ProtocolError "no such method".
    private static bool IsUnknownMethod(QubesFirewallException ex) =>
        ex.ErrorId == ErrorIds.QubesdEmptyReply || ex is QubesdException { QubesdClass: "ProtocolError" } q && q.QubesdMessage.Contains("no such method", StringComparison.Ordinal);

    private Qube BuildQube(QubesdVmListEntry entry, IReadOnlyDictionary<string, QubesdProperty> props, LazyFeatures features)
    {
        var what = QubesdClient.Describe("admin.vm.property.GetAll", null, entry.Name);
        var cls = ParseClass(entry.ClassName);
        var networking = cls is not (QubeClass.AdminVM or QubeClass.RemoteVM);
        string? Value(string name) => props.TryGetValue(name, out var p) && p.Value.Length > 0 ? p.Value : null;

        string? netvm = null;
        var source = NetVmSource.None;
        if (networking && props.TryGetValue("netvm", out var netvmProperty))
        {
            netvm = netvmProperty.Value.Length > 0 ? netvmProperty.Value : null;
            source = netvmProperty.IsDefault ? NetVmSource.Default : netvm is null ? NetVmSource.None : NetVmSource.Explicit;
        }

        var qid = props.TryGetValue("qid", out var qidProperty) ? AdminApiReplies.ParseInt(qidProperty, what) : 0;
        return new Qube
        {
            Name = entry.Name,
            Qid = qid,
            Class = cls,
            ClassName = entry.ClassName,
            State = AdminApiReplies.ParsePowerState(entry.State),
            NetVM = netvm,
            NetVmSource = source,
            IP = networking ? Value("ip") : null,
            IPv6 = networking ? Value("ip6") : null,
            ProvidesNetwork = networking && props.TryGetValue("provides_network", out var pn) && AdminApiReplies.ParseBool(pn, what),
            Template = cls is QubeClass.AppVM or QubeClass.DispVM ? Value("template") : null,
            Label = Value("label"),
            Uuid = Value("uuid") is { } uuid && Guid.TryParseExact(uuid, "D", out var parsedUuid) ? parsedUuid.ToString("D") : null,
            DispId = props.TryGetValue("dispid", out var dispid) && dispid.Value.Length > 0 ? AdminApiReplies.ParseInt(dispid, what) : null,
            TemplateForDispVMs = props.TryGetValue("template_for_dispvms", out var tfd) && AdminApiReplies.ParseBool(tfd, what),
            DefaultDispVM = cls == QubeClass.RemoteVM ? null : Value("default_dispvm"),
            Features = features,
            Properties = SetExplicitly(props),
            Tags = new LazyList(() => ReadTags(entry.Name)),
            RelativeDirectory = cls switch
            {
                QubeClass.AdminVM or QubeClass.RemoteVM => null,
                QubeClass.TemplateVM => QubesXml.TemplatesDirectory + "/" + entry.Name,
                _ => QubesXml.AppVmsDirectory + "/" + entry.Name,
            },
        };
    }

    private Dictionary<string, string> ReadLabels()
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var label in AdminApiReplies.ParseNames(Client.CallText("admin.label.List", "dom0"), "admin.label.List (on dom0)"))
            map[label] = Client.CallText("admin.label.Get", "dom0", label);
        return map;
    }

    /// <summary>The names of a qube's features (<c>admin.vm.feature.List</c>).</summary>
    public IReadOnlyList<string> ListFeatures(string vmName) =>
        AdminApiReplies.ParseNames(Client.CallText("admin.vm.feature.List", QubeName.Validate(vmName)), QubesdClient.Describe("admin.vm.feature.List", null, vmName));

    /// <summary>A feature's value (<c>admin.vm.feature.Get</c>); null when the qube does not have it.</summary>
    public string? GetFeature(string vmName, string name)
    {
        QubeFeature.ValidateName(name);
        try
        {
            return Client.CallText("admin.vm.feature.Get", QubeName.Validate(vmName), name);
        }
        catch (QubesdException ex) when (ex.ErrorId == ErrorIds.FeatureNotFound)
        {
            return null;
        }
    }


    private static Dictionary<string, string> SetExplicitly(IReadOnlyDictionary<string, QubesdProperty> props) =>
        props.Values.Where(p => !p.IsDefault).ToDictionary(p => p.Name, p => p.Value, StringComparer.Ordinal);

    /// <summary>
    /// The executor's check before it first writes features of a qube: one <c>feature.List</c> now (a feature someone
    /// added or removed since the plan read them shows there), then a <c>feature.Get</c> only where the name is there and
    /// the kept value cannot be trusted. The module's own features (<c>qubesfirewall.*</c>, <c>vm-config.qubesfw.*</c>)
    /// are written only by deployments under the deployment lock, each of which renews its stamp; this backend read them
    /// again when it took the lock if the stamp had changed (<see cref="LockDeployments"/>), so the value it keeps of one
    /// is the current one unless someone set it by hand with the same name (qvm-features): that is the one change this
    /// check does not see. Every other feature (<c>ipv6</c>) is read again. So a plan of forwards costs one call per
    /// qube it writes to, not one per feature it writes.
    /// </summary>
    public IReadOnlyDictionary<string, string?> ReadFeaturesNow(string vmName, IReadOnlyCollection<string> names)
    {
        var present = ListFeatures(vmName).ToHashSet(StringComparer.Ordinal);
        _features.TryGetValue(vmName, out var kept);
        var now = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var name in names.Distinct(StringComparer.Ordinal))
            now[name] = !present.Contains(name) ? null
                : OwnFeatures.IsOwn(name) && kept?.Known(name) is { } value ? value
                : GetFeature(vmName, name);
        return now;
    }

    /// <summary>The executor's check before it first writes properties of a qube: one <c>property.GetAll</c> now.</summary>
    public IReadOnlyDictionary<string, string> ReadPropertiesNow(string vmName) => SetExplicitly(ReadProperties(global: false, vmName));

    private List<string> ReadTags(string vmName) =>
        AdminApiReplies.ParseNames(Client.CallText("admin.vm.tag.List", vmName), QubesdClient.Describe("admin.vm.tag.List", null, vmName)).ToList();

    // ------------------------------------------------------------------ firewall

    public FirewallDocument GetFirewall(string vmName)
    {
        QubeName.Validate(vmName);
        if (vmName == "dom0")
            throw new QubesFirewallException(ErrorIds.NoFirewall, FailureKind.InvalidOperation, "dom0 has no network and no firewall rules (qubesd refuses admin.vm.firewall.* for it).", vmName);
        return AdminApiReplies.ParseFirewall(Client.CallText("admin.vm.firewall.Get", vmName), QubesdClient.Describe("admin.vm.firewall.Get", null, vmName));
    }

    /// <summary>
    /// Re-reads the list just before writing; if it is not the list the edit was planned on (someone
    /// else changed it: qubesd has no lock, and Set replaces the whole list), refuses with
    /// FirewallChangedSinceRead and writes nothing. Otherwise one Set with the whole new list. The
    /// moments between this re-read and the Set remain unguarded (qubesd offers no compare-and-set).
    /// </summary>
    public FirewallEditOutcome ApplyFirewallEdit(string vmName, FirewallEdit edit, FirewallDocument snapshot)
    {
        var now = _clock();
        var current = GetFirewall(vmName);
        var planned = snapshot.VisibleAt(now).Select(r => r.Text).ToList();
        var visible = current.VisibleAt(now);
        if (!planned.SequenceEqual(visible.Select(r => r.Text), StringComparer.Ordinal))
            throw new QubesFirewallException(ErrorIds.FirewallChangedSinceRead, FailureKind.InvalidOperation,
                $"The firewall rules of '{vmName}' changed since they were read for this command (someone else edited them, or qubesd reloaded them): {DescribeDifference(planned, visible.Select(r => r.Text).ToList())}. Nothing was changed; run the command again to plan on the current list.", vmName);
        var outcome = edit.ApplyTo(visible);
        if (outcome.Rules.Select(r => r.Text).SequenceEqual(visible.Select(r => r.Text), StringComparer.Ordinal))
            return outcome; // nothing to write (every rule already present)
        SetFirewall(vmName, outcome.Rules);
        return outcome;
    }

    private static string DescribeDifference(IReadOnlyList<string> planned, IReadOnlyList<string> current)
    {
        var gone = planned.Except(current, StringComparer.Ordinal).ToList();
        var added = current.Except(planned, StringComparer.Ordinal).ToList();
        var parts = new List<string>();
        if (added.Count > 0) parts.Add($"now also '{added[0]}'" + (added.Count > 1 ? $" and {added.Count - 1} more" : ""));
        if (gone.Count > 0) parts.Add($"no longer '{gone[0]}'" + (gone.Count > 1 ? $" and {gone.Count - 1} more" : ""));
        if (parts.Count == 0) parts.Add("the same rules in another order");
        return $"{planned.Count} rules then, {current.Count} now; " + string.Join("; ", parts);
    }

    /// <summary>
    /// <c>admin.vm.firewall.Set</c> with the whole list. Every rule is validated first; a list qubesd
    /// cannot take (empty, or a request over its 64 KiB limit) is refused before anything is sent.
    /// </summary>
    public void SetFirewall(string vmName, IReadOnlyList<FirewallRule> rules)
    {
        QubeName.Validate(vmName);
        if (rules.Count == 0)
            throw new QubesFirewallException(ErrorIds.EmptyRuleList, FailureKind.InvalidOperation,
                $"The rule list of '{vmName}' would be empty, and qubesd's Admin API cannot set an empty list (admin.vm.firewall.Set requires a payload). Keep at least one rule: 'action=drop' blocks everything, 'action=accept' allows everything. Nothing was changed.", vmName);
        for (var i = 0; i < rules.Count; i++)
        {
            try
            {
                rules[i].Validate();
            }
            catch (QubesFirewallException ex)
            {
                throw new QubesFirewallException(ex.ErrorId, ex.Kind,
                    $"Rule {i} of '{vmName}' cannot be sent to qubesd, which would refuse the whole list: {ex.Message} Remove or fix that rule first. Nothing was changed.", ex.Target);
            }
        }
        const string method = "admin.vm.firewall.Set";
        var header = QubesdClient.HeaderBytes(method, null, vmName);
        var payload = AdminApiReplies.FirewallPayload(rules);
        if (header + payload.Length > QubesdClient.MaxRequestBytes)
        {
            var fit = 0;
            var size = header;
            foreach (var rule in rules)
            {
                size += Encoding.ASCII.GetByteCount(rule.Text) + 1;
                if (size > QubesdClient.MaxRequestBytes) break;
                fit++;
            }
            throw new QubesFirewallException(ErrorIds.FirewallRequestTooLarge, FailureKind.InvalidOperation,
                string.Create(CultureInfo.InvariantCulture,
                    $"The {rules.Count:N0} rules of '{vmName}' make a Set request of {header + payload.Length:N0} bytes, over qubesd's limit of {QubesdClient.MaxRequestBytes:N0} bytes per request: only the first {fit:N0} of these rules would fit. Shorten the list (fewer rules, shorter comments, networks instead of single hosts). Nothing was changed."),
                vmName);
        }
        Client.Call(method, vmName, payload: payload);
    }

    /// <summary>
    /// <c>admin.vm.firewall.Reload</c>: qubesd writes the rules into the network qube's QubesDB itself.
    /// Returns the entries the engine renders for the rule list Get shows (marked rendered, not read back).
    /// </summary>
    public IReadOnlyList<QubesDbEntry> SyncFirewall(string vmName)
    {
        QubeName.Validate(vmName);
        var qube = GetInventory().Get(vmName);
        if (qube.NetVM is null)
            throw new QubesFirewallException(ErrorIds.NoNetVM, FailureKind.InvalidOperation, $"'{qube.Name}' has no network qube, so no qube enforces its firewall rules. Set its netvm first.", vmName);
        var rules = GetFirewall(vmName).Rules;
        Client.Call("admin.vm.firewall.Reload", vmName);
        return QubesDbRenderer.Render(qube.NetVM, qube.IP, qube.IPv6, rules, _clock());
    }

    // ------------------------------------------------------------------ features, properties, power

    public void SetFeature(string vmName, string name, string value)
    {
        QubeName.Validate(vmName);
        QubeFeature.ValidateName(name);
        QubeFeature.ValidateValue(name, value);
        try
        {
            Client.Call("admin.vm.feature.Set", vmName, name, Encoding.ASCII.GetBytes(value));
        }
        catch
        {
            Invalidate();
            throw;
        }
        Wrote(vmName, name, value);
    }

    public bool RemoveFeature(string vmName, string name)
    {
        QubeName.Validate(vmName);
        QubeFeature.ValidateName(name);
        try
        {
            Client.Call("admin.vm.feature.Remove", vmName, name);
        }
        catch (QubesdException ex) when (ex.ErrorId == ErrorIds.FeatureNotFound)
        {
            Wrote(vmName, name, null);
            return false;
        }
        catch
        {
            Invalidate();
            throw;
        }
        Wrote(vmName, name, null);
        return true;
    }

    /// <summary>
    /// After a feature call qubesd accepted: the module's own features (declarations <c>qubesfirewall.*</c>, agent keys
    /// <c>vm-config.qubesfw.*</c>) are known exactly, and nothing else of the qube depends on them, so the cached
    /// inventory keeps them (the next record of a pipeline plans without reading every qube again). Any other feature
    /// can change what qubesd computes (<c>ipv6</c> gives addresses to the qube and its clients): everything is read again.
    /// -WhatIf sends nothing, so nothing is known.
    /// </summary>
    private void Wrote(string vmName, string name, string? value)
    {
        var own = OwnFeatures.IsOwn(name);
        if (!own || Client.DryRun is not null) Invalidate();
        else if (_features.TryGetValue(vmName, out var features)) features.Wrote(name, value);
    }

    /// <summary><c>admin.vm.property.Set</c> (qubesd checks the value; e.g. netvm repair sets netvm to its current value).</summary>
    public void SetProperty(string vmName, string name, string value)
    {
        QubeName.Validate(vmName);
        ValidatePropertyName(name);
        if (value.Any(c => c is < '\x20' or > '\x7E'))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyValue, $"The value of property '{name}' must be printable ASCII.", value);
        Client.Call("admin.vm.property.Set", vmName, name, Encoding.ASCII.GetBytes(value));
        Invalidate();
    }

    /// <summary><c>admin.vm.property.Reset</c>: back to the default (e.g. netvm follows default_netvm again).</summary>
    public void ResetProperty(string vmName, string name)
    {
        QubeName.Validate(vmName);
        ValidatePropertyName(name);
        Client.Call("admin.vm.property.Reset", vmName, name);
        Invalidate();
    }

    private static void ValidatePropertyName(string name)
    {
        if (name.Length == 0 || !(char.IsAsciiLetter(name[0]) || name[0] == '_') || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidPropertyName, $"'{RuleGrammar.Printable(name)}' is not a valid property name (letters, digits and '_', not starting with a digit).", name);
    }

    /// <summary><c>admin.vm.Start</c>; returns once qubesd reports the qube started.</summary>
    public void StartQube(string vmName)
    {
        QubeName.Validate(vmName);
        Client.Call("admin.vm.Start", vmName, timeout: Client.LongTimeout);
        Invalidate();
    }

    // ------------------------------------------------------------------ files in qubes

    public string? ReadQubeFile(string vmName, string path)
    {
        QubeName.Validate(vmName);
        var result = _runner.Run(vmName, QubeFileCommands.Read(path), ReadOnlyMemory<byte>.Empty, CommandTimeout, QubeAnswerLimit.File(AnswerLimits, path));
        if (result.ExitCode == QubeFileCommands.MissingExitCode) return null;
        if (result.ExitCode != 0) throw CommandFailed(vmName, $"read {path}", result);
        return result.OutputText;
    }

    public UnixFileMode? ReadQubeFileMode(string vmName, string path)
    {
        QubeName.Validate(vmName);
        var result = _runner.Run(vmName, QubeFileCommands.Mode(path), ReadOnlyMemory<byte>.Empty, CommandTimeout, QubeAnswerLimit.Output(AnswerLimits, $"tell the mode of {path}"));
        if (result.ExitCode == QubeFileCommands.MissingExitCode) return null;
        if (result.ExitCode != 0) throw CommandFailed(vmName, $"tell the mode of {path}", result);
        return QubeFileModes.Parse(result.OutputText, vmName, path);
    }

    /// <summary>
    /// -WhatIf on the live system: changing Admin API calls and qvm-run writes and runs are reported
    /// (with their payload or standard input) instead of sent, until the returned scope ends.
    /// </summary>
    public IDisposable BeginDryRun(Action<string> report)
    {
        Client.DryRun = report;
        _dryRun = report;
        return new DryRunScope(this);
    }

    private Action<string>? _dryRun;

    private sealed class DryRunScope(AdminApiBackend backend) : IDisposable
    {
        public void Dispose()
        {
            backend.Client.DryRun = null;
            backend._dryRun = null;
        }
    }

    private bool ReportInsteadOfRunning(string vmName, string command, string? standardInput)
    {
        if (_dryRun is not { } report) return false;
        // The content may hold the qube's own lines: shown escaped, never byte for byte.
        report($"qvm-run --pass-io --no-gui --no-autostart -u root {vmName} '{command}'" + (standardInput is null ? "" : " with standard input:\n" + QubeText.Escape(standardInput)));
        return true;
    }

    public void WriteQubeFile(string vmName, string path, string content, UnixFileMode mode)
    {
        QubeName.Validate(vmName);
        if (ReportInsteadOfRunning(vmName, QubeFileCommands.Write(path, mode), content)) return;
        var result = _runner.Run(vmName, QubeFileCommands.Write(path, mode), QubeText.Encode(content), CommandTimeout, QubeAnswerLimit.Output(AnswerLimits, $"write {path}"));
        if (result.ExitCode != 0) throw CommandFailed(vmName, $"write {path}", result);
    }

    public void DeleteQubeFile(string vmName, string path)
    {
        QubeName.Validate(vmName);
        if (ReportInsteadOfRunning(vmName, QubeFileCommands.Delete(path), null)) return;
        var result = _runner.Run(vmName, QubeFileCommands.Delete(path), ReadOnlyMemory<byte>.Empty, CommandTimeout, QubeAnswerLimit.Output(AnswerLimits, $"delete {path}"));
        if (result.ExitCode != 0) throw CommandFailed(vmName, $"delete {path}", result);
    }

    public QubeCommandResult RunQubeScript(string vmName, string path)
    {
        QubeName.Validate(vmName);
        if (ReportInsteadOfRunning(vmName, QubeFileCommands.Run(path), null)) return new QubeCommandResult(vmName, path, 0, "", Executed: false);
        var result = _runner.Run(vmName, QubeFileCommands.Run(path), ReadOnlyMemory<byte>.Empty, CommandTimeout, QubeAnswerLimit.Output(AnswerLimits, $"run {path}"));
        var output = result.ShownOutput + result.ShownError;
        if (result.ExitCode != 0 && NotRunning(vmName) is { } state)
            throw NotRunningError(vmName, state, $"run {path}");
        return new QubeCommandResult(vmName, path, result.ExitCode, output, Executed: true);
    }

    /// <summary>
    /// Runs a generated script as root in the qube: <c>/bin/sh -s</c> reads it from standard input, so it is
    /// neither written anywhere nor part of any command line. <paramref name="description"/> only names it in errors.
    /// </summary>
    public QubeCommandResult RunQubeShellScript(string vmName, string script, string description)
    {
        QubeName.Validate(vmName);
        if (ReportInsteadOfRunning(vmName, QubeFileCommands.RunStandardInput, script)) return new QubeCommandResult(vmName, "(standard input)", 0, "", Executed: false);
        var result = _runner.Run(vmName, QubeFileCommands.RunStandardInput, AtomicFileEncoding.GetBytes(script), CommandTimeout, QubeAnswerLimit.Output(AnswerLimits, $"run {description.Replace('\n', ' ')}"));
        if (result.ExitCode != 0 && NotRunning(vmName) is { } state)
            throw NotRunningError(vmName, state, $"run {description.Replace('\n', ' ')}");
        return new QubeCommandResult(vmName, "(standard input)", result.ExitCode, result.ShownOutput + result.ShownError, Executed: true);
    }

    private static readonly UTF8Encoding AtomicFileEncoding = new(encoderShouldEmitUTF8Identifier: false);

    // qvm-run --no-autostart fails on a qube that is not running; say so instead of "exit code 1".
    private PowerState? NotRunning(string vmName)
    {
        try
        {
            var state = AdminApiReplies.ParsePowerState(ReadListEntry(vmName).State);
            return state == PowerState.Running ? null : state;
        }
        catch (QubesFirewallException)
        {
            return null;
        }
    }

    private static QubesFirewallException NotRunningError(string vmName, PowerState state, string what) =>
        new(ErrorIds.QubeNotRunning, FailureKind.ResourceUnavailable,
            $"Cannot {what} in '{vmName}': the qube is {state.ToString().ToLowerInvariant()}, not running. Start it first (qvm-start {vmName}, or the cmdlet's -Start switch where it has one).", vmName);

    private QubesFirewallException CommandFailed(string vmName, string what, QubeProcessResult result)
    {
        if (NotRunning(vmName) is { } state) return NotRunningError(vmName, state, what);
        var detail = result.ShownError.Trim();
        return new QubesFirewallException(ErrorIds.QubeCommandFailed, FailureKind.InvalidOperation,
            $"Cannot {what} in '{vmName}': qvm-run exited with code {result.ExitCode}" + (detail.Length > 0 ? $": {RuleGrammar.Printable(detail)}" : "."), vmName);
    }

    public void Dispose() { }

    // ------------------------------------------------------------------ lazily read collections

    /// <summary>A read-only map filled on first use (features, label colours: read only when someone looks).</summary>
    private sealed class LazyMap(Func<Dictionary<string, string>> load) : IReadOnlyDictionary<string, string>
    {
        private readonly Lazy<Dictionary<string, string>> _map = new(load, LazyThreadSafetyMode.PublicationOnly);
        private Dictionary<string, string> Map => _map.Value;
        public string this[string key] => Map[key];
        public IEnumerable<string> Keys => Map.Keys;
        public IEnumerable<string> Values => Map.Values;
        public int Count => Map.Count;
        public bool ContainsKey(string key) => Map.ContainsKey(key);
        public bool TryGetValue(string key, out string value) => Map.TryGetValue(key, out value!);
        public IEnumerator<KeyValuePair<string, string>> GetEnumerator() => Map.GetEnumerator();
        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>
    /// A qube's features, read as little as the caller needs: the names first (one <c>feature.List</c>), then one
    /// <c>feature.Get</c> for each feature looked up by name that is there, or enumerated. Each is read once. The names
    /// come first because a plan asks several features of a qube by name and most are absent (<c>whonix-gw</c>,
    /// <c>qubes-agent-version</c>, <c>qubes-firewall</c> along a chain and its templates): one List answers all of
    /// those, where a Get each would cost one call per name; and the readers of declarations and agent keys list every
    /// qube's names anyway.
    /// </summary>
    private sealed class LazyFeatures(AdminApiBackend backend, string vmName) : IReadOnlyDictionary<string, string>
    {
        private readonly Dictionary<string, string?> _values = new(StringComparer.Ordinal);
        private List<string>? _names;

        private List<string> Names => _names ??= backend.ListFeatures(vmName).ToList();

        /// <summary>What this backend itself set (value) or removed (null), as qubesd now has it.</summary>
        public void Wrote(string name, string? value)
        {
            _values[name] = value;
            if (_names is null) return;
            _names.Remove(name);
            if (value is not null) _names.Add(name);
        }

        /// <summary>The value read or written before (null: none known, or known absent); reads nothing.</summary>
        public string? Known(string name) => _values.GetValueOrDefault(name);

        public bool TryGetValue(string key, out string value)
        {
            if (!_values.TryGetValue(key, out var known))
                _values[key] = known = !Names.Contains(key, StringComparer.Ordinal) ? null : backend.GetFeature(vmName, key);
            value = known!;
            return known is not null;
        }

        public string this[string key] => TryGetValue(key, out var value) ? value : throw new KeyNotFoundException($"'{vmName}' has no feature '{key}'.");
        /// <summary>Whether the qube has the feature, from the names alone (one List; no value is read).</summary>
        public bool ContainsKey(string key) => _values.TryGetValue(key, out var known) ? known is not null : Names.Contains(key, StringComparer.Ordinal);
        /// <summary>The names alone (one List): a caller after some features by name reads only their values.</summary>
        public IEnumerable<string> Keys => Names.Where(n => !_values.TryGetValue(n, out var known) || known is not null);
        public IEnumerable<string> Values => Pairs().Select(p => p.Value);
        public int Count => Pairs().Count();
        public IEnumerator<KeyValuePair<string, string>> GetEnumerator() => Pairs().GetEnumerator();
        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

        // A feature removed between the List and its Get is left out, as before.
        private IEnumerable<KeyValuePair<string, string>> Pairs()
        {
            foreach (var name in Names)
                if (TryGetValue(name, out var value)) yield return new(name, value);
        }
    }

    private sealed class LazyList(Func<List<string>> load) : IReadOnlyList<string>
    {
        private readonly Lazy<List<string>> _list = new(load, LazyThreadSafetyMode.PublicationOnly);
        public string this[int index] => _list.Value[index];
        public int Count => _list.Value.Count;
        public IEnumerator<string> GetEnumerator() => _list.Value.GetEnumerator();
        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
