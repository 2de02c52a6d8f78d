using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Tests.Shared;

namespace QubesFirewall.Engine.Tests.ConnectTcp;

/// <summary>Plans and offline apply: step order, files, features, conflicts, warnings, idempotence, the shared managed block.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class TcpBindingPlannerTests : IDisposable
{
    private const string RcLocal = "/rw/config/rc.local";
    private readonly TempRoot _root = new(QubesXmlBuilder.Standard()
        .Qube("default-dvm", 20, "sys-firewall", template: "fedora-42")
        .Qube("disp7", 21, "sys-firewall", cls: "DispVM", template: "default-dvm", dispid: 7)
        .Build());

    public void Dispose() => _root.Dispose();

    private OfflineRoot Backend => _root.Backend;

    private static DeploymentOptions Offline => new();

    private TcpBindingPlan Add(Model.TcpBinding b)
    {
        var plan = TcpBindingPlanner.PlanAdd(Backend, b, Offline);
        Assert.Null(TcpBindingPlanner.Apply(Backend, plan).Failure);
        return plan;
    }

    private TcpBindingPlan Remove(string from, string to, int port)
    {
        var plan = TcpBindingPlanner.PlanRemove(Backend, from, to, port, Offline);
        Assert.Null(TcpBindingPlanner.Apply(Backend, plan).Failure);
        return plan;
    }

    private string? Policy => Backend.ReadDom0File(QrexecPolicy.FilePath);

    private void WriteDom0(string path, string content) => Backend.WriteDom0File(path, content, QrexecPolicy.FileMode);

    private static readonly Model.TcpBinding Main = Model.TcpBinding.Create("untrusted", "work", 444, 10444, permanent: true);

    [Fact]
    public void Adding_declares_then_installs_the_listener_then_allows_it_last()
    {
        var plan = TcpBindingPlanner.PlanAdd(Backend, Main, Offline);
        Assert.Equal(PlanOperation.Add, plan.Operation);
        Assert.Equal([DeploymentStepKind.SetFeature, DeploymentStepKind.WriteFile, DeploymentStepKind.RunScript, DeploymentStepKind.WriteDom0File], plan.Steps.Select(s => s.Kind));
        Assert.Equal(["untrusted", "untrusted", "untrusted", "dom0"], plan.Steps.Select(s => s.VMName));
        Assert.Contains("qubes.ConnectTCP +444 untrusted @default allow target=work", plan.Describe());
        Assert.Null(Policy);

        Assert.Null(TcpBindingPlanner.Apply(Backend, plan).Failure);
        Assert.Equal("localport=10444 permanent=yes", Backend.GetInventory().Get("untrusted").Features["qubesfirewall.tcp.work.444"]);
        var rules = QrexecPolicyModel.ParseFile(QrexecPolicy.FileName, Policy!);
        Assert.Equal(("untrusted", "work"), (Assert.Single(rules).Source, rules[0].Params["target"]));
        Assert.Equal(QrexecPolicy.FileMode, File.GetUnixFileMode(Backend.Dom0FilePath(QrexecPolicy.FilePath)));
        Assert.EndsWith(Path.Combine("qubesfirewall-state", "dom0", "etc", "qubes", "policy.d", "70-qubesfirewall.policy"), Backend.Dom0FilePath(QrexecPolicy.FilePath));

        var rc = Backend.ReadQubeFile("untrusted", RcLocal)!;
        Assert.StartsWith("#!/bin/sh\n", rc);
        var body = ManagedBlock.Extract(rc)!;
        Assert.StartsWith(ConnectTcpPersistence.BeginMarker + "\n", body);
        Assert.EndsWith(ConnectTcpPersistence.EndMarker + "\n", body);
        Assert.Equal(ConnectTcpUnitsTests.Heredocs(plan.Steps[2].Script!), ConnectTcpUnitsTests.Heredocs(body));
        Assert.Contains("ListenStream=127.0.0.1:10444", body);
        Assert.Equal(ManagedBlock.FileMode, File.GetUnixFileMode(Backend.QubeFilePath("untrusted", RcLocal)));
        Assert.Contains("script sha256:", File.ReadAllText(Path.Combine(_root.Path, "qubesfirewall-state", "untrusted", "applied.log")));
    }

    [Fact]
    public void Running_the_same_add_again_writes_nothing_and_only_reruns_the_idempotent_script()
    {
        Add(Main);
        var before = (Policy, Backend.ReadQubeFile("untrusted", RcLocal), File.ReadAllText(Backend.QubesXmlPath));
        var again = TcpBindingPlanner.PlanAdd(Backend, Main, Offline);
        Assert.Equal(PlanOperation.Reapply, again.Operation);
        Assert.Equal([DeploymentStepKind.RunScript], again.Steps.Select(s => s.Kind));
        Assert.Null(TcpBindingPlanner.Apply(Backend, again).Failure);
        Assert.Equal(before, (Policy, Backend.ReadQubeFile("untrusted", RcLocal), File.ReadAllText(Backend.QubesXmlPath)));
    }

    [Fact]
    public void Changing_the_local_port_updates_the_listener_but_not_the_policy()
    {
        Add(Main);
        var policy = Policy;
        var plan = Add(Main with { LocalPort = 20444 });
        Assert.Equal(PlanOperation.Update, plan.Operation);
        Assert.Equal([DeploymentStepKind.SetFeature, DeploymentStepKind.WriteFile, DeploymentStepKind.RunScript], plan.Steps.Select(s => s.Kind));
        Assert.Equal(policy, Policy);
        Assert.Contains("ListenStream=127.0.0.1:20444", Backend.ReadQubeFile("untrusted", RcLocal));
        Assert.DoesNotContain("10444", Backend.ReadQubeFile("untrusted", RcLocal));
    }

    [Fact]
    public void A_binding_that_is_not_permanent_keeps_only_the_declaration_and_the_policy()
    {
        var plan = Add(Model.TcpBinding.Create("personal", "work", 5432));
        Assert.Equal([DeploymentStepKind.SetFeature, DeploymentStepKind.WriteDom0File], plan.Steps.Select(s => s.Kind));
        Assert.Null(Backend.ReadQubeFile("personal", RcLocal));
        Assert.Contains(plan.Notes, n => n.Contains("qvm-connect-tcp 5432:@default:5432", StringComparison.Ordinal));

        // becoming permanent, then not again: the listener comes and goes
        Add(Model.TcpBinding.Create("personal", "work", 5432, permanent: true));
        Assert.Contains("qubesfirewall-tcp-5432.socket", Backend.ReadQubeFile("personal", RcLocal));
        var back = Add(Model.TcpBinding.Create("personal", "work", 5432));
        Assert.Equal([DeploymentStepKind.SetFeature, DeploymentStepKind.WriteFile, DeploymentStepKind.RunScript], back.Steps.Select(s => s.Kind));
        Assert.Equal("#!/bin/sh\n", Backend.ReadQubeFile("personal", RcLocal));
        Assert.Contains("qfw_want=' '", back.Steps[2].Script);
    }

    [Fact]
    public void One_target_per_client_and_port_and_one_binding_per_local_port()
    {
        Add(Main);
        var before = File.ReadAllText(Backend.QubesXmlPath);
        var conflict = Assert.Throws<QubesFirewallException>(() => TcpBindingPlanner.PlanAdd(Backend, Model.TcpBinding.Create("untrusted", "personal", 444), Offline));
        Assert.Equal("TcpBindingConflict", conflict.ErrorId);
        Assert.Contains("Remove-QubeTcpBinding -From untrusted -To work -Port 444", conflict.Message);
        var local = Assert.Throws<QubesFirewallException>(() => TcpBindingPlanner.PlanAdd(Backend, Model.TcpBinding.Create("untrusted", "personal", 22, 10444, true), Offline));
        Assert.Equal("LocalPortInUse", local.ErrorId);
        Assert.Equal(before, File.ReadAllText(Backend.QubesXmlPath));
        // another client may use the same ports, and the same client another port
        Add(Model.TcpBinding.Create("personal", "work", 444, 10444, true));
        Add(Model.TcpBinding.Create("untrusted", "personal", 22, 2222, true));
        Assert.Equal(3, QrexecPolicyModel.ParseFile("x", Policy!).Count);
    }

    [Fact]
    public void Unknown_qubes_are_refused() =>
        Assert.Equal("QubeNotFound", Assert.Throws<QubesFirewallException>(() => TcpBindingPlanner.PlanAdd(Backend, Model.TcpBinding.Create("untrusted", "nosuch", 1), Offline)).ErrorId);

    [Fact]
    public void Removing_closes_the_policy_first_and_cleans_up_to_the_state_before()
    {
        var rcBefore = "#!/bin/sh\n# the user's own line\necho hello\n";
        Backend.WriteQubeFile("untrusted", RcLocal, rcBefore, ManagedBlock.FileMode);
        Add(Main);
        Add(Model.TcpBinding.Create("personal", "work", 22));
        var plan = Remove("untrusted", "work", 444);
        Assert.Equal([DeploymentStepKind.WriteDom0File, DeploymentStepKind.WriteFile, DeploymentStepKind.RunScript, DeploymentStepKind.RemoveFeature], plan.Steps.Select(s => s.Kind));
        Assert.Equal(rcBefore, Backend.ReadQubeFile("untrusted", RcLocal));
        Assert.Equal("personal", Assert.Single(QrexecPolicyModel.ParseFile("x", Policy!)).Source);
        Assert.False(Backend.GetInventory().Get("untrusted").Features.ContainsKey("qubesfirewall.tcp.work.444"));

        var last = Remove("personal", "work", 22);
        Assert.Equal([DeploymentStepKind.RemoveDom0File, DeploymentStepKind.RemoveFeature], last.Steps.Select(s => s.Kind));
        Assert.Null(Policy);
        Assert.Equal("TcpBindingNotFound", Assert.Throws<QubesFirewallException>(() => TcpBindingPlanner.PlanRemove(Backend, "personal", "work", 22, Offline)).ErrorId);
    }

    [Fact]
    public void A_hand_written_or_unreadable_feature_is_ignored_with_a_warning_and_removable()
    {
        Backend.SetFeature("untrusted", "qubesfirewall.tcp.work.0444", "localport=1 permanent=perhaps");
        var plan = TcpBindingPlanner.PlanAdd(Backend, Model.TcpBinding.Create("personal", "work", 22), Offline);
        Assert.Contains(plan.Warnings, w => w.Contains("qubesfirewall.tcp.work.0444 of untrusted is not a valid", StringComparison.Ordinal));
        var listed = TcpBindingPlanner.List(Backend.GetInventory());
        var bad = Assert.Single(listed);
        Assert.False(bad.IsValid);
        Assert.Equal(("work", 444), (bad.To, bad.Port));
        var remove = Remove("untrusted", "work", 444);
        Assert.Contains(remove.Warnings, w => w.Contains("cannot be read", StringComparison.Ordinal));
        Assert.Empty(TcpBindingPlanner.List(Backend.GetInventory()));
    }

    [Fact]
    public void A_line_of_another_file_that_decides_first_is_reported()
    {
        WriteDom0("/etc/qubes/policy.d/30-user.policy", "# mine\nqubes.ConnectTCP * untrusted @anyvm deny\n");
        var plan = TcpBindingPlanner.PlanAdd(Backend, Main, Offline);
        var warning = Assert.Single(plan.Warnings);
        Assert.Contains("30-user.policy:2", warning);
        Assert.Contains("it denies the call", warning);

        // an allow to the same target first is fine; an R4.0 file for the port sends it elsewhere
        WriteDom0("/etc/qubes/policy.d/30-user.policy", "qubes.ConnectTCP +444 untrusted @default allow target=work\n");
        Assert.Empty(TcpBindingPlanner.PlanAdd(Backend, Main, Offline).Warnings);
        Backend.DeleteDom0File("/etc/qubes/policy.d/30-user.policy");
        WriteDom0("/etc/qubes/policy.d/35-compat.policy", "!compat-4.0\n");
        var legacy = Dom0Files.Map(Backend.Dom0Root, "/etc/qubes-rpc/policy/qubes.ConnectTCP+444");
        Directory.CreateDirectory(Path.GetDirectoryName(legacy)!);
        File.WriteAllText(legacy, "untrusted $default allow,target=vault\n");
        Assert.Contains(TcpBindingPlanner.PlanAdd(Backend, Main, Offline).Warnings, w => w.Contains("sends the call to 'vault'", StringComparison.Ordinal));
    }

    [Fact]
    public void A_badly_named_policy_file_is_reported_as_refusing_everything()
    {
        WriteDom0("/etc/qubes/policy.d/90-default.policy", "qubes.ConnectTCP * @anyvm @anyvm deny\n");
        File.WriteAllText(Path.Combine(Path.GetDirectoryName(Backend.Dom0FilePath(QrexecPolicy.FilePath))!, "31-Mine.policy"), "");
        Assert.Contains(TcpBindingPlanner.PlanAdd(Backend, Main, Offline).Warnings, w => w.Contains("31-Mine.policy", StringComparison.Ordinal) && w.Contains("refuses every call", StringComparison.Ordinal));
    }

    [Fact]
    public void A_policy_file_edited_by_hand_is_rewritten_with_a_warning()
    {
        Add(Main);
        WriteDom0(QrexecPolicy.FilePath, Policy + "qubes.ConnectTCP +22 @anyvm @default allow target=vault\n");
        var plan = TcpBindingPlanner.PlanAdd(Backend, Model.TcpBinding.Create("personal", "work", 22), Offline);
        Assert.Contains(plan.Warnings, w => w.Contains("not what the declarations give", StringComparison.Ordinal));
        Assert.Null(TcpBindingPlanner.Apply(Backend, plan).Failure);
        Assert.DoesNotContain("vault", Policy);
    }

    [Fact]
    public void The_listener_and_a_port_forward_of_the_same_qube_do_not_disturb_each_other()
    {
        var forward = PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]);
        Assert.Null(PortForwardPlanner.Apply(Backend, PortForwardPlanner.PlanAdd(Backend, forward, DeploymentOptions.For(Backend, _root.Now))).Failure);
        Dictionary<string, string> Keys() => Backend.GetInventory().Get("work").Features.Where(f => Agent.AgentFeatures.IsAgentFeature(f.Key)).ToDictionary(f => f.Key, f => f.Value);
        var keys = Keys();
        Assert.NotEmpty(keys);
        Assert.Null(Backend.ReadQubeFile("work", RcLocal)); // the forward is agent keys: its rc.local is not written

        Add(Model.TcpBinding.Create("work", "personal", 22, 2222, true));
        var section = ConnectTcpPersistence.Extract(ManagedBlock.Extract(Backend.ReadQubeFile("work", RcLocal)));
        Assert.Contains("qubesfirewall-tcp-2222.socket", section);
        Assert.Equal(keys, Keys());
        // what Export-QubeFirewallScript shows for work: the forward's rules and the bindings' section
        var inventory = Backend.GetInventory();
        var export = PortForwardPlanner.Export(inventory, "work")!.Script;
        Assert.Contains("tcp/443 to work", export);
        Assert.EndsWith(section, export);
        Assert.Equal("body\n", ConnectTcpPersistence.WithBindings(inventory, inventory.Get("work"), "/rw/config/qubes-firewall-user-script", "body\n"));

        Remove("work", "personal", 22);
        Assert.Equal("", ConnectTcpPersistence.Extract(ManagedBlock.Extract(Backend.ReadQubeFile("work", RcLocal))));
        Assert.Equal(keys, Keys());
    }

    [Fact]
    public void A_port_forward_change_keeps_the_bindings_section_of_the_same_block()
    {
        Add(Model.TcpBinding.Create("work", "personal", 22, 2222, true));
        var section = ConnectTcpPersistence.Extract(ManagedBlock.Extract(Backend.ReadQubeFile("work", RcLocal)));
        var forward = PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]);
        Assert.Null(PortForwardPlanner.Apply(Backend, PortForwardPlanner.PlanAdd(Backend, forward, DeploymentOptions.For(Backend, _root.Now))).Failure);
        Assert.Equal(section, ConnectTcpPersistence.Extract(ManagedBlock.Extract(Backend.ReadQubeFile("work", RcLocal))));
        Assert.Null(PortForwardPlanner.Apply(Backend, PortForwardPlanner.PlanRemove(Backend, "work", ForwardProtocol.Tcp, 443, DeploymentOptions.For(Backend, _root.Now))).Failure);
        Assert.Equal(section, ConnectTcpPersistence.Extract(ManagedBlock.Extract(Backend.ReadQubeFile("work", RcLocal))));
    }

    [Fact]
    public void A_disposable_client_keeps_its_part_in_its_template_guarded_by_its_name()
    {
        var plan = Add(Model.TcpBinding.Create("disp7", "work", 444, 10444, true));
        Assert.Contains(plan.Warnings, w => w.Contains("disposable of 'default-dvm'", StringComparison.Ordinal));
        Assert.Equal("default-dvm", plan.Steps.Single(s => s.Kind == DeploymentStepKind.WriteFile).VMName);
        Assert.Equal("disp7", plan.Steps.Single(s => s.Kind == DeploymentStepKind.RunScript).VMName);
        var body = ManagedBlock.Extract(Backend.ReadQubeFile("default-dvm", RcLocal))!;
        Assert.Contains("if [ \"$(qubesdb-read /name 2>/dev/null)\" = 'disp7' ]; then", body);
        Assert.Null(Backend.ReadQubeFile("disp7", RcLocal));
    }

    [Fact]
    public void A_damaged_section_is_refused_and_nothing_written()
    {
        Backend.WriteQubeFile("untrusted", RcLocal, ManagedBlock.Upsert(null, ConnectTcpPersistence.BeginMarker + "\necho half\n"), ManagedBlock.FileMode);
        var ex = Assert.Throws<QubesFirewallException>(() => TcpBindingPlanner.PlanAdd(Backend, Main, Offline));
        Assert.Equal("ManagedBlockDamaged", ex.ErrorId);
        Assert.StartsWith("untrusted:/rw/config/rc.local:", ex.Message);
    }

    [Fact]
    public void On_the_live_backend_a_halted_client_cannot_get_a_listener_file()
    {
        var options = new DeploymentOptions { RequireRunning = true };
        var inventory = Backend.GetInventory();
        var dom0 = Dom0PolicyReader.For(Backend);
        // permanent: its rc.local is read inside it, so the plan waits for it (no step, and applying it is refused by name)
        var blocked = TcpBindingPlanner.PlanAdd(inventory, Main, options, Backend.ReadQubeFile, dom0);
        Assert.False(blocked.IsComplete);
        Assert.Empty(blocked.Steps);
        Assert.Equal(["untrusted"], blocked.NotRunning.Select(q => q.Name));
        var ex = Assert.Throws<QubesFirewallException>(() => TcpBindingPlanner.Apply(Backend, blocked));
        Assert.Equal("QubesNotRunning", ex.ErrorId);
        Assert.Contains("untrusted (halted)", ex.Message);
        // not permanent: no file in the client, nothing to refuse
        var plan = TcpBindingPlanner.PlanAdd(inventory, Model.TcpBinding.Create("untrusted", "work", 444), options, Backend.ReadQubeFile, dom0);
        Assert.Equal([DeploymentStepKind.SetFeature, DeploymentStepKind.WriteDom0File], plan.Steps.Select(s => s.Kind));
        // running: the file and the run
        var running = new QubesInventory(inventory.Qubes.Select(q => q.Name == "untrusted" ? q with { State = PowerState.Running } : q).ToList(), inventory.GlobalProperties);
        Assert.Contains(TcpBindingPlanner.PlanAdd(running, Main, options, Backend.ReadQubeFile, dom0).Steps, s => s.Kind == DeploymentStepKind.RunScript);

        // removing never waits for the client: the grant goes, its file is left for the next change while it runs
        Add(Main);
        var halted = Backend.GetInventory();
        var remove = TcpBindingPlanner.PlanRemove(halted, "untrusted", "work", 444, options, (_, _) => throw new InvalidOperationException("no qvm-run into a halted qube"), dom0);
        Assert.Equal([DeploymentStepKind.RemoveDom0File, DeploymentStepKind.RemoveFeature], remove.Steps.Select(s => s.Kind));
        Assert.Contains(remove.Warnings, w => w.Contains("harmless once the policy refuses the call", StringComparison.Ordinal));
    }

    [Fact]
    public void Dom0_paths_are_limited_to_the_policy_directories()
    {
        foreach (var bad in new[] { "/etc/passwd", "/etc/qubes/policy.d/../x.policy", "/etc/qubes/policy.d/.hidden.policy", "/etc/qubes/policy.d/", "etc/qubes/policy.d/x.policy", "/etc/qubes/policy.d/sub/x.policy", "/etc/qubes/policy.d/-x.policy" })
            Assert.Equal("InvalidDom0Path", Assert.Throws<QubesFirewallException>(() => Backend.WriteDom0File(bad, "", QrexecPolicy.FileMode)).ErrorId);
        Assert.Equal("InvalidDom0Path", Assert.Throws<QubesFirewallException>(() => Backend.WriteDom0File("/etc/qubes-rpc/policy/qubes.ConnectTCP", "", QrexecPolicy.FileMode)).ErrorId);
        Assert.Null(Backend.ReadDom0File("/etc/qubes-rpc/policy/qubes.ConnectTCP+444"));
        Assert.Equal("InvalidDom0Path", Assert.Throws<QubesFirewallException>(() => Backend.ListDom0Files("/etc")).ErrorId);
        Assert.Empty(Backend.ListDom0Files(QrexecPolicy.LegacyDirectory));
    }
}
