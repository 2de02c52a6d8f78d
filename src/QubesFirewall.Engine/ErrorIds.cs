namespace QubesFirewall.Engine;

/// <summary>
/// Every error id the module reports (the ErrorRecord's ErrorId), each written out in full here and nowhere
/// built at run time. Each is listed with its meaning in docs/cmdlets/QubesFirewall.md, and the cmdlets that
/// raise one themselves name it on their page (ErrorIdTests checks both ways).
/// </summary>
public static class ErrorIds
{
    // Qubes, properties and features
    /// <summary>No qube of that name (or qubesd's QubesVMNotFoundError).</summary>
    public const string QubeNotFound = nameof(QubeNotFound);
    /// <summary>A qube's netvm names a qube that does not exist.</summary>
    public const string NetVmNotFound = nameof(NetVmNotFound);
    /// <summary>The qube has no network qube, so nothing enforces its rules.</summary>
    public const string NoNetVM = nameof(NoNetVM);
    /// <summary>dom0 or a remote qube: it has no Qubes networking.</summary>
    public const string NoNetwork = nameof(NoNetwork);
    /// <summary>dom0 has no Qubes firewall.</summary>
    public const string NoFirewall = nameof(NoFirewall);
    /// <summary>The new netvm would make a loop of network qubes.</summary>
    public const string NetVmLoop = nameof(NetVmLoop);
    /// <summary>A netvm was set to a qube that does not provide network.</summary>
    public const string NotANetworkQube = nameof(NotANetworkQube);
    /// <summary>A configuration file gives a qube a netvm that does not provide network.</summary>
    public const string NotANetVm = nameof(NotANetVm);
    /// <summary>A configuration file names a qube (dom0, a remote qube) that has no networking to configure.</summary>
    public const string NotManaged = nameof(NotManaged);
    /// <summary>The network qube is still the netvm of other qubes.</summary>
    public const string NetworkQubeInUse = nameof(NetworkQubeInUse);
    /// <summary>The property is set once, at creation.</summary>
    public const string PropertyReadOnly = nameof(PropertyReadOnly);
    /// <summary>The property does not apply to this class of qube.</summary>
    public const string PropertyNotApplicable = nameof(PropertyNotApplicable);
    /// <summary>The property has no default, so it cannot be reset.</summary>
    public const string PropertyHasNoDefault = nameof(PropertyHasNoDefault);
    /// <summary>qubesd knows no such property.</summary>
    public const string PropertyNotFound = nameof(PropertyNotFound);
    /// <summary>Not a property name qubesd accepts.</summary>
    public const string InvalidPropertyName = nameof(InvalidPropertyName);
    /// <summary>A property value that cannot be written.</summary>
    public const string InvalidPropertyValue = nameof(InvalidPropertyValue);
    /// <summary>qubesd has no such feature.</summary>
    public const string FeatureNotFound = nameof(FeatureNotFound);
    /// <summary>Not a feature name qubesd accepts.</summary>
    public const string InvalidFeatureName = nameof(InvalidFeatureName);
    /// <summary>A feature value qubesd would refuse.</summary>
    public const string InvalidFeatureValue = nameof(InvalidFeatureValue);
    /// <summary>Not a qube name qubesd accepts.</summary>
    public const string InvalidQubeName = nameof(InvalidQubeName);
    /// <summary>A -VMName wildcard pattern that does not parse.</summary>
    public const string InvalidNamePattern = nameof(InvalidNamePattern);
    /// <summary>A qube's address is not one IPv4 or IPv6 address.</summary>
    public const string InvalidQubeAddress = nameof(InvalidQubeAddress);
    /// <summary>qubes.xml cannot be read, or it is not what qubesd writes.</summary>
    public const string InvalidQubesXml = nameof(InvalidQubesXml);

    // Firewall rules
    /// <summary>A rule that qubesd would refuse.</summary>
    public const string InvalidFirewallRule = nameof(InvalidFirewallRule);
    /// <summary>A rule in qvm-firewall's text form that does not parse.</summary>
    public const string InvalidRuleText = nameof(InvalidRuleText);
    /// <summary>A destination host that is not an address, network or DNS name.</summary>
    public const string InvalidDstHost = nameof(InvalidDstHost);
    /// <summary>Destination ports outside 0-65535 or reversed.</summary>
    public const string InvalidDstPorts = nameof(InvalidDstPorts);
    /// <summary>Destination ports without protocol tcp or udp.</summary>
    public const string PortsNeedTcpOrUdp = nameof(PortsNeedTcpOrUdp);
    /// <summary>An ICMP type outside 0-255.</summary>
    public const string InvalidIcmpType = nameof(InvalidIcmpType);
    /// <summary>An ICMP type without protocol icmp.</summary>
    public const string IcmpTypeNeedsIcmp = nameof(IcmpTypeNeedsIcmp);
    /// <summary>An expiry time that is not a time before year 10000.</summary>
    public const string InvalidExpire = nameof(InvalidExpire);
    /// <summary>An expiry time that is already past.</summary>
    public const string ExpireInPast = nameof(ExpireInPast);
    /// <summary>A comment too long, blank, or with characters qubesd refuses.</summary>
    public const string InvalidComment = nameof(InvalidComment);
    /// <summary>A firewall.xml that cannot be read or written as qubesd does.</summary>
    public const string InvalidFirewallXml = nameof(InvalidFirewallXml);
    /// <summary>Rule number past the end of the list.</summary>
    public const string RuleNumberOutOfRange = nameof(RuleNumberOutOfRange);
    /// <summary>The rule at that number is no longer the one that was read.</summary>
    public const string RuleMismatch = nameof(RuleMismatch);
    /// <summary>An insertion position past the end of the list.</summary>
    public const string PositionOutOfRange = nameof(PositionOutOfRange);
    /// <summary>Setting no rules without -AllowEmpty.</summary>
    public const string EmptyRuleInput = nameof(EmptyRuleInput);
    /// <summary>The list would be empty, which the Admin API cannot set.</summary>
    public const string EmptyRuleList = nameof(EmptyRuleList);
    /// <summary>Some input rule was invalid, so none was added.</summary>
    public const string RulesNotAdded = nameof(RulesNotAdded);
    /// <summary>Some input rule was invalid, so the list was not set.</summary>
    public const string RulesNotSet = nameof(RulesNotSet);
    /// <summary>The rules changed between reading and writing them.</summary>
    public const string FirewallChangedSinceRead = nameof(FirewallChangedSinceRead);
    /// <summary>The rule list is larger than qubesd reads in one request.</summary>
    public const string FirewallRequestTooLarge = nameof(FirewallRequestTooLarge);

    // Port forwards
    /// <summary>A port outside 1-65535.</summary>
    public const string InvalidForwardPort = nameof(InvalidForwardPort);
    /// <summary>An -AllowFrom source that is not an address or network.</summary>
    public const string InvalidAllowFrom = nameof(InvalidAllowFrom);
    /// <summary>More -AllowFrom sources than a forward takes.</summary>
    public const string TooManySources = nameof(TooManySources);
    /// <summary>No -AllowFrom: a forward names the networks it is open to, or -AllowFrom Any for everyone.</summary>
    public const string AllowFromRequired = nameof(AllowFromRequired);
    /// <summary>Not an interface name.</summary>
    public const string InvalidInterface = nameof(InvalidInterface);
    /// <summary>A qube's address that cannot go into an nft rule.</summary>
    public const string InvalidAddress = nameof(InvalidAddress);
    /// <summary>The port is already forwarded to another qube through the same network qube.</summary>
    public const string PortAlreadyForwarded = nameof(PortAlreadyForwarded);
    /// <summary>No such forward declared on the qube.</summary>
    public const string PortForwardNotFound = nameof(PortForwardNotFound);
    /// <summary>A forward's feature that does not parse.</summary>
    public const string InvalidPortForwardFeature = nameof(InvalidPortForwardFeature);
    /// <summary>IPv6 sources, but IPv6 is not on along the chain.</summary>
    public const string IPv6NotEnabled = nameof(IPv6NotEnabled);
    /// <summary>A Whonix gateway on the way.</summary>
    public const string WhonixInChain = nameof(WhonixInChain);
    /// <summary>A qube on the way is not running.</summary>
    public const string HopNotRunning = nameof(HopNotRunning);
    /// <summary>A qube on the way runs a Qubes release older than R4.2.</summary>
    public const string QubesReleaseNotSupported = nameof(QubesReleaseNotSupported);
    /// <summary>A forward failed and everything was put back.</summary>
    public const string PortForwardRolledBack = nameof(PortForwardRolledBack);
    /// <summary>A forward failed and something could not be put back.</summary>
    public const string PortForwardPartiallyApplied = nameof(PortForwardPartiallyApplied);
    /// <summary>An agent reported a failure; the forward's features were put back.</summary>
    public const string PortForwardAgentFailed = nameof(PortForwardAgentFailed);
    /// <summary>The features are set, but an agent did not confirm in time.</summary>
    public const string PortForwardAgentUnconfirmed = nameof(PortForwardAgentUnconfirmed);
    /// <summary>-NoWait and -TimeoutSeconds together: no agent is asked, so there is nothing to wait for.</summary>
    public const string NoWaitWithTimeout = nameof(NoWaitWithTimeout);

    // Inter-qube links
    /// <summary>A link port outside 1-65535.</summary>
    public const string InvalidLinkPort = nameof(InvalidLinkPort);
    /// <summary>A link protocol other than tcp or udp.</summary>
    public const string InvalidLinkProtocol = nameof(InvalidLinkProtocol);
    /// <summary>A link from a qube to itself.</summary>
    public const string LinkToItself = nameof(LinkToItself);
    /// <summary>No link was given.</summary>
    public const string NoLink = nameof(NoLink);
    /// <summary>No such link declared.</summary>
    public const string LinkNotFound = nameof(LinkNotFound);
    /// <summary>The two qubes are not behind the same network qube.</summary>
    public const string DifferentNetVM = nameof(DifferentNetVM);
    /// <summary>A link failed and everything was put back.</summary>
    public const string InterVmLinkRolledBack = nameof(InterVmLinkRolledBack);
    /// <summary>A link failed and something could not be put back.</summary>
    public const string InterVmLinkPartiallyApplied = nameof(InterVmLinkPartiallyApplied);
    /// <summary>An agent reported a failure; the link's features were put back.</summary>
    public const string InterVmLinkAgentFailed = nameof(InterVmLinkAgentFailed);
    /// <summary>The features are set, but an agent did not confirm in time.</summary>
    public const string InterVmLinkAgentUnconfirmed = nameof(InterVmLinkAgentUnconfirmed);

    // qubes.ConnectTCP bindings
    /// <summary>A binding port outside 1-65535.</summary>
    public const string InvalidTcpBindingPort = nameof(InvalidTcpBindingPort);
    /// <summary>A binding from or to dom0.</summary>
    public const string Dom0NotAllowed = nameof(Dom0NotAllowed);
    /// <summary>A binding from a qube to itself.</summary>
    public const string SameQube = nameof(SameQube);
    /// <summary>The qube already has a binding for that port, to another qube.</summary>
    public const string TcpBindingConflict = nameof(TcpBindingConflict);
    /// <summary>No such binding declared.</summary>
    public const string TcpBindingNotFound = nameof(TcpBindingNotFound);
    /// <summary>A binding's feature that does not parse.</summary>
    public const string InvalidTcpBindingFeature = nameof(InvalidTcpBindingFeature);
    /// <summary>Two permanent bindings of a qube on one local port.</summary>
    public const string LocalPortInUse = nameof(LocalPortInUse);
    /// <summary>A line of a dom0 qrexec policy file that does not parse.</summary>
    public const string InvalidPolicyFile = nameof(InvalidPolicyFile);
    /// <summary>A binding failed and everything was put back.</summary>
    public const string TcpBindingRolledBack = nameof(TcpBindingRolledBack);
    /// <summary>A binding failed and something could not be put back.</summary>
    public const string TcpBindingPartiallyApplied = nameof(TcpBindingPartiallyApplied);

    // Agent
    /// <summary>Not a key of the agent's vm-config.qubesfw.* features.</summary>
    public const string InvalidAgentKey = nameof(InvalidAgentKey);
    /// <summary>Two rule parts of one qube derive the same agent key.</summary>
    public const string AgentKeyCollision = nameof(AgentKeyCollision);
    /// <summary>dom0 or a template: the agent does not run there.</summary>
    public const string AgentNotForThisQube = nameof(AgentNotForThisQube);
    /// <summary>The agent was installed but did not start.</summary>
    public const string AgentStartFailed = nameof(AgentStartFailed);
    /// <summary>A qube on the way has no QubesFirewall agent, so a forward or link cannot reach it; nothing was changed.</summary>
    public const string QubeFirewallAgentMissing = nameof(QubeFirewallAgentMissing);
    /// <summary>R4.3's custom-persist is on, so the /rw/config hooks never run.</summary>
    public const string CustomPersist = nameof(CustomPersist);

    // Network configuration files
    /// <summary>No such configuration file.</summary>
    public const string ConfigurationNotFound = nameof(ConfigurationNotFound);
    /// <summary>The configuration file cannot be read.</summary>
    public const string ConfigurationUnreadable = nameof(ConfigurationUnreadable);
    /// <summary>The configuration file is larger than is read.</summary>
    public const string ConfigurationTooLarge = nameof(ConfigurationTooLarge);
    /// <summary>The configuration file does not have the expected shape.</summary>
    public const string InvalidConfiguration = nameof(InvalidConfiguration);
    /// <summary>The configuration file cannot be written.</summary>
    public const string ConfigurationNotWritten = nameof(ConfigurationNotWritten);
    /// <summary>Applying a configuration failed and everything was put back.</summary>
    public const string NetworkConfigurationRolledBack = nameof(NetworkConfigurationRolledBack);
    /// <summary>Applying a configuration failed and something could not be put back.</summary>
    public const string NetworkConfigurationPartiallyApplied = nameof(NetworkConfigurationPartiallyApplied);

    // NetVM repair
    /// <summary>A network qube to re-attach to is not running.</summary>
    public const string NetVmNotRunning = nameof(NetVmNotRunning);
    /// <summary>Re-attaching a qube to its network qube failed.</summary>
    public const string NetVmRepairFailed = nameof(NetVmRepairFailed);

    // Deployment: starting qubes, files in qubes and dom0
    /// <summary>Qubes the change needs are halted (and -Start was not given).</summary>
    public const string QubesNotRunning = nameof(QubesNotRunning);
    /// <summary>The qube is not running.</summary>
    public const string QubeNotRunning = nameof(QubeNotRunning);
    /// <summary>A qube of a class qubesd does not start.</summary>
    public const string QubeCannotStart = nameof(QubeCannotStart);
    /// <summary>The qube is in a state that does not allow the call (qubesd's QubesVMNot*Error).</summary>
    public const string QubeStateConflict = nameof(QubeStateConflict);
    /// <summary>A step of a plan failed without an error of its own; the message says what was put back.</summary>
    public const string PlanFailed = nameof(PlanFailed);
    /// <summary>A feature, property or file changed between the plan reading it and the write; what the plan had changed was put back.</summary>
    public const string PlanOutdated = nameof(PlanOutdated);
    /// <summary>Another deployment holds the lock.</summary>
    public const string DeploymentLocked = nameof(DeploymentLocked);
    /// <summary>The module's block in a hook file was edited by hand.</summary>
    public const string ManagedBlockDamaged = nameof(ManagedBlockDamaged);
    /// <summary>A command in a qube failed.</summary>
    public const string QubeCommandFailed = nameof(QubeCommandFailed);
    /// <summary>A command in a qube did not finish in time.</summary>
    public const string QubeCommandTimeout = nameof(QubeCommandTimeout);
    /// <summary>qvm-run does not exist (not in dom0).</summary>
    public const string QvmRunNotAvailable = nameof(QvmRunNotAvailable);
    /// <summary>Not a path the module writes in a qube.</summary>
    public const string InvalidQubePath = nameof(InvalidQubePath);
    /// <summary>A value for a generated script with control characters.</summary>
    public const string InvalidScriptValue = nameof(InvalidScriptValue);
    /// <summary>A qube answered more than is read.</summary>
    public const string QubeAnswerTooLarge = nameof(QubeAnswerTooLarge);
    /// <summary>A qube's answer is not in the expected form.</summary>
    public const string QubeAnswerInvalid = nameof(QubeAnswerInvalid);
    /// <summary>An answer-size limit in the environment that is not a number of bytes.</summary>
    public const string InvalidQubeAnswerLimit = nameof(InvalidQubeAnswerLimit);
    /// <summary>The backend has no access to dom0's files (an offline root).</summary>
    public const string Dom0FilesNotSupported = nameof(Dom0FilesNotSupported);
    /// <summary>Not a dom0 directory the module reads.</summary>
    public const string InvalidDom0Path = nameof(InvalidDom0Path);
    /// <summary>No permission to write the dom0 file.</summary>
    public const string Dom0FileAccessDenied = nameof(Dom0FileAccessDenied);

    // Backends and qubesd
    /// <summary>No -Root and no qubesd socket.</summary>
    public const string NoBackend = nameof(NoBackend);
    /// <summary>The -Root directory has no qubes.xml.</summary>
    public const string QubesRootNotFound = nameof(QubesRootNotFound);
    /// <summary>No permission to connect to qubesd.</summary>
    public const string QubesdAccessDenied = nameof(QubesdAccessDenied);
    /// <summary>qubesd's socket refuses connections.</summary>
    public const string QubesdNotRunning = nameof(QubesdNotRunning);
    /// <summary>qubesd's socket cannot be reached.</summary>
    public const string QubesdUnreachable = nameof(QubesdUnreachable);
    /// <summary>qubesd did not answer in time.</summary>
    public const string QubesdTimeout = nameof(QubesdTimeout);
    /// <summary>The connection to qubesd broke during a call.</summary>
    public const string QubesdConnectionLost = nameof(QubesdConnectionLost);
    /// <summary>qubesd's reply ended in the middle.</summary>
    public const string QubesdReplyTruncated = nameof(QubesdReplyTruncated);
    /// <summary>qubesd answered nothing.</summary>
    public const string QubesdEmptyReply = nameof(QubesdEmptyReply);
    /// <summary>qubesd's reply is not in the expected form.</summary>
    public const string QubesdBadReply = nameof(QubesdBadReply);
    /// <summary>qubesd refused the call (qubesd's PermissionDenied).</summary>
    public const string QubesdPermissionDenied = nameof(QubesdPermissionDenied);
    /// <summary>qubesd's ProtocolError.</summary>
    public const string QubesdProtocolError = nameof(QubesdProtocolError);
    /// <summary>qubesd refused a value.</summary>
    public const string QubesdRefusedValue = nameof(QubesdRefusedValue);
    /// <summary>Any other qubesd exception.</summary>
    public const string QubesdError = nameof(QubesdError);
    /// <summary>A call that is not a valid Admin API method, argument or destination.</summary>
    public const string InvalidAdminApiCall = nameof(InvalidAdminApiCall);
    /// <summary>A request larger than qubesd reads.</summary>
    public const string RequestTooLarge = nameof(RequestTooLarge);
}
