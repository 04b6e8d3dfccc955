"""Business vocabularies for generated diagrams (`make_diagram_set`), six domains in English and
Russian: the labels a model sees in training should read like real processes, not lorem ipsum.

A decision's first answer is the one that carries the process on; a loop goes back on its last
answer ("No", "Needs changes"), so two-answer questions are phrased to fit that.
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAINS = ("ordering", "hr", "finance", "it_support", "logistics", "healthcare")
LANGUAGES = ("en", "ru")


@dataclass(frozen=True)
class Decision:
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Vocabulary:
    domain: str
    language: str
    titles: tuple[str, ...]
    pools: tuple[str, ...]
    lanes: tuple[str, ...]
    tasks: tuple[str, ...]
    events: tuple[str, ...]
    decisions: tuple[Decision, ...]
    ends: tuple[str, ...]

    def decisions_with(self, branches: int) -> tuple[Decision, ...]:
        return tuple(decision for decision in self.decisions if len(decision.answers) == branches)


def _d(question: str, *answers: str) -> Decision:
    return Decision(question, answers)


YES_NO_EN = ("Yes", "No")
YES_NO_RU = ("Да", "Нет")

_EN = {
    "ordering": dict(
        titles=("Customer order processing", "Online order fulfilment", "Order to delivery"),
        pools=("Online shop", "Customer", "Warehouse"),
        lanes=("Customer", "Sales manager", "Warehouse", "Accounting", "Courier service"),
        tasks=("Receive the order", "Check stock availability", "Reserve the items", "Issue the invoice",
               "Confirm the order by email", "Pick the items", "Pack the parcel", "Print the shipping label",
               "Hand the parcel to the courier", "Notify the customer", "Record the payment", "Update the order status",
               "Offer a replacement product", "Apply the discount code", "Calculate the delivery cost",
               "Contact the customer by phone", "Cancel the reservation", "Refund the payment", "Process the return",
               "Inspect the returned goods", "Send the tracking number", "Archive the order"),
        events=("Payment received", "24 hours passed", "Parcel delivered"),
        decisions=(_d("Are all items in stock?", *YES_NO_EN), _d("Is the payment confirmed?", *YES_NO_EN),
                   _d("Is the address complete?", *YES_NO_EN), _d("Does the customer accept the replacement?", *YES_NO_EN),
                   _d("Is the parcel intact?", *YES_NO_EN), _d("Is the order above the free delivery limit?", *YES_NO_EN),
                   _d("How will the customer pay?", "Card", "Invoice", "Cash on delivery"),
                   _d("Which delivery was chosen?", "Courier", "Pickup point", "Post", "Store pickup")),
        ends=("Order delivered", "Order cancelled", "Refund issued", "Return accepted", "Order on hold"),
    ),
    "hr": dict(
        titles=("Hiring a new employee", "Employee onboarding", "Vacation request approval"),
        pools=("Company", "Candidate", "Recruitment agency"),
        lanes=("HR manager", "Hiring manager", "Candidate", "IT department", "Employee"),
        tasks=("Publish the vacancy", "Screen the CVs", "Schedule the interview", "Conduct the interview",
               "Send the test assignment", "Review the test results", "Check the references", "Prepare the job offer",
               "Sign the employment contract", "Create the personnel file", "Set up the workplace", "Issue the access badge",
               "Assign a mentor", "Hold the welcome meeting", "Submit the vacation request", "Check the remaining leave days",
               "Find a substitute", "Update the work schedule", "Send the rejection letter", "Add the candidate to the talent pool",
               "Register the employee in payroll", "Plan the probation review"),
        events=("Candidate replied", "Probation period ended", "Two weeks passed"),
        decisions=(_d("Does the CV match the requirements?", *YES_NO_EN), _d("Did the candidate pass the interview?", *YES_NO_EN),
                   _d("Was the offer accepted?", *YES_NO_EN), _d("Are there enough leave days?", *YES_NO_EN),
                   _d("Is the test assignment acceptable?", *YES_NO_EN), _d("Is the manager available?", *YES_NO_EN),
                   _d("What is the interview result?", "Hire", "Second interview", "Reject"),
                   _d("What type of leave is it?", "Annual", "Sick leave", "Unpaid", "Parental")),
        ends=("Employee hired", "Candidate rejected", "Vacation approved", "Vacation declined", "Onboarding complete"),
    ),
    "finance": dict(
        titles=("Invoice approval", "Expense reimbursement", "Monthly closing"),
        pools=("Company", "Supplier", "Bank"),
        lanes=("Employee", "Department head", "Accountant", "Chief financial officer", "Treasury"),
        tasks=("Register the invoice", "Match the invoice to the purchase order", "Check the VAT amount",
               "Submit the expense report", "Attach the receipts", "Approve the expenses", "Schedule the payment",
               "Transfer the funds", "Post the journal entry", "Reconcile the bank statement", "Request the missing documents",
               "Calculate the depreciation", "Prepare the budget report", "Review the cost centre", "Send the payment reminder",
               "Block the supplier account", "Correct the booking", "Archive the documents", "Notify the supplier",
               "Export the data to the ERP", "Check the exchange rate", "Sign the payment order"),
        events=("End of month", "Payment deadline reached", "Bank confirmation received"),
        decisions=(_d("Do the amounts match?", *YES_NO_EN), _d("Is the amount within budget?", *YES_NO_EN),
                   _d("Are all receipts attached?", *YES_NO_EN), _d("Is the supplier verified?", *YES_NO_EN),
                   _d("Is the invoice overdue?", *YES_NO_EN), _d("Is the approval signed?", *YES_NO_EN),
                   _d("What is the expense amount?", "Under 500", "500 to 5000", "Over 5000"),
                   _d("Which currency is used?", "Euro", "Dollar", "Rouble", "Other")),
        ends=("Invoice paid", "Invoice rejected", "Expenses reimbursed", "Period closed", "Escalated to audit"),
    ),
    "it_support": dict(
        titles=("Incident management", "IT service request", "Password reset"),
        pools=("IT department", "User", "External vendor"),
        lanes=("User", "Service desk", "Second-line support", "System administrator", "Vendor"),
        tasks=("Register the ticket", "Classify the incident", "Set the priority", "Verify the user's identity",
               "Reset the password", "Check the system logs", "Restart the service", "Apply the known workaround",
               "Escalate to second line", "Contact the vendor", "Install the update", "Replace the hardware",
               "Test the fix", "Update the knowledge base", "Inform the user", "Close the ticket", "Create a backup",
               "Grant the access rights", "Order the equipment", "Configure the laptop", "Document the root cause",
               "Schedule the maintenance window"),
        events=("Ticket received", "SLA time exceeded", "Vendor responded"),
        decisions=(_d("Is it a known problem?", *YES_NO_EN), _d("Is the issue resolved?", *YES_NO_EN),
                   _d("Is the user verified?", *YES_NO_EN), _d("Is the request approved by the manager?", *YES_NO_EN),
                   _d("Does the fix work?", *YES_NO_EN), _d("Is the device under warranty?", *YES_NO_EN),
                   _d("What is the priority?", "High", "Medium", "Low"),
                   _d("What kind of request is it?", "Access", "Hardware", "Software", "Other")),
        ends=("Ticket closed", "Request rejected", "Issue escalated", "Access granted", "Equipment delivered"),
    ),
    "logistics": dict(
        titles=("Shipment planning", "Goods receipt at the warehouse", "Freight delivery"),
        pools=("Logistics company", "Shipper", "Consignee"),
        lanes=("Dispatcher", "Warehouse operator", "Driver", "Customs broker", "Quality inspector"),
        tasks=("Receive the transport request", "Plan the route", "Assign a vehicle", "Book the loading slot",
               "Load the truck", "Seal the container", "Prepare the waybill", "Submit the customs declaration",
               "Pay the customs duties", "Track the shipment", "Unload the goods", "Count the pallets",
               "Inspect the goods for damage", "Register the goods in stock", "Place the goods in storage",
               "Write the discrepancy report", "Return the goods to the supplier", "Sign the delivery note",
               "Update the delivery date", "Notify the consignee", "Weigh the cargo", "Arrange temporary storage"),
        events=("Truck arrived", "Customs cleared", "Delivery window missed"),
        decisions=(_d("Is a vehicle available?", *YES_NO_EN), _d("Does the quantity match the waybill?", *YES_NO_EN),
                   _d("Are the goods damaged?", "No", "Yes"), _d("Is customs clearance needed?", *YES_NO_EN),
                   _d("Is the weight within the limit?", *YES_NO_EN), _d("Is the consignee available?", *YES_NO_EN),
                   _d("Which transport mode?", "Road", "Rail", "Air"),
                   _d("What is the inspection result?", "Accepted", "Partially accepted", "Rejected", "Postponed")),
        ends=("Goods delivered", "Goods accepted into stock", "Shipment returned", "Claim filed", "Delivery rescheduled"),
    ),
    "healthcare": dict(
        titles=("Patient admission", "Outpatient appointment", "Prescription renewal"),
        pools=("Clinic", "Patient", "Laboratory"),
        lanes=("Patient", "Receptionist", "Nurse", "Doctor", "Laboratory"),
        tasks=("Book the appointment", "Register the patient", "Check the insurance policy", "Measure the vital signs",
               "Take the medical history", "Examine the patient", "Order the blood tests", "Take the blood sample",
               "Analyse the sample", "Review the test results", "Make the diagnosis", "Prescribe the medication",
               "Refer to a specialist", "Schedule the follow-up visit", "Admit to the ward", "Prepare the discharge summary",
               "Update the medical record", "Issue the sick note", "Explain the treatment plan", "Collect the payment",
               "Renew the prescription", "Call the patient"),
        events=("Test results ready", "Patient arrived", "Appointment time reached"),
        decisions=(_d("Is the insurance valid?", *YES_NO_EN), _d("Are the results normal?", *YES_NO_EN),
                   _d("Is hospitalisation needed?", "No", "Yes"), _d("Is the patient's condition stable?", *YES_NO_EN),
                   _d("Did the treatment help?", *YES_NO_EN), _d("Is a specialist available today?", *YES_NO_EN),
                   _d("How urgent is the case?", "Emergency", "Urgent", "Routine"),
                   _d("Which specialist is needed?", "Cardiologist", "Neurologist", "Surgeon", "Therapist")),
        ends=("Patient discharged", "Patient hospitalised", "Referred to a specialist", "Treatment completed",
              "Appointment cancelled"),
    ),
}

_RU = {
    "ordering": dict(
        titles=("Обработка заказа клиента", "Выполнение интернет-заказа", "От заказа до доставки"),
        pools=("Интернет-магазин", "Клиент", "Склад"),
        lanes=("Клиент", "Менеджер по продажам", "Склад", "Бухгалтерия", "Курьерская служба"),
        tasks=("Принять заказ", "Проверить наличие товара", "Зарезервировать товар", "Выставить счёт",
               "Подтвердить заказ по почте", "Собрать товар", "Упаковать посылку", "Распечатать транспортную накладную",
               "Передать посылку курьеру", "Уведомить клиента", "Отметить оплату", "Обновить статус заказа",
               "Предложить замену товара", "Применить промокод", "Рассчитать стоимость доставки",
               "Позвонить клиенту", "Снять резерв", "Вернуть деньги", "Оформить возврат",
               "Проверить возвращённый товар", "Отправить трек-номер", "Перенести заказ в архив"),
        events=("Оплата получена", "Прошло 24 часа", "Посылка доставлена"),
        decisions=(_d("Все товары в наличии?", *YES_NO_RU), _d("Оплата подтверждена?", *YES_NO_RU),
                   _d("Адрес указан полностью?", *YES_NO_RU), _d("Клиент согласен на замену?", *YES_NO_RU),
                   _d("Посылка не повреждена?", *YES_NO_RU), _d("Сумма выше порога бесплатной доставки?", *YES_NO_RU),
                   _d("Как клиент оплачивает?", "Картой", "По счёту", "Наличными курьеру"),
                   _d("Какой способ доставки выбран?", "Курьер", "Пункт выдачи", "Почта", "Самовывоз")),
        ends=("Заказ доставлен", "Заказ отменён", "Деньги возвращены", "Возврат принят", "Заказ приостановлен"),
    ),
    "hr": dict(
        titles=("Найм нового сотрудника", "Адаптация сотрудника", "Согласование отпуска"),
        pools=("Компания", "Кандидат", "Кадровое агентство"),
        lanes=("HR-менеджер", "Руководитель отдела", "Кандидат", "ИТ-отдел", "Сотрудник"),
        tasks=("Опубликовать вакансию", "Отобрать резюме", "Назначить собеседование", "Провести собеседование",
               "Отправить тестовое задание", "Оценить тестовое задание", "Проверить рекомендации", "Подготовить оффер",
               "Подписать трудовой договор", "Завести личное дело", "Подготовить рабочее место", "Выдать пропуск",
               "Назначить наставника", "Провести приветственную встречу", "Подать заявление на отпуск",
               "Проверить остаток отпускных дней", "Найти замену", "Обновить график работы", "Отправить отказ",
               "Добавить кандидата в кадровый резерв", "Внести сотрудника в расчёт зарплаты",
               "Запланировать оценку испытательного срока"),
        events=("Кандидат ответил", "Испытательный срок окончен", "Прошло две недели"),
        decisions=(_d("Резюме соответствует требованиям?", *YES_NO_RU), _d("Кандидат прошёл собеседование?", *YES_NO_RU),
                   _d("Оффер принят?", *YES_NO_RU), _d("Хватает отпускных дней?", *YES_NO_RU),
                   _d("Тестовое задание выполнено?", *YES_NO_RU), _d("Руководитель на месте?", *YES_NO_RU),
                   _d("Каков итог собеседования?", "Принять", "Второе собеседование", "Отказать"),
                   _d("Какой это отпуск?", "Ежегодный", "Больничный", "За свой счёт", "Декретный")),
        ends=("Сотрудник принят", "Кандидату отказано", "Отпуск согласован", "Отпуск отклонён", "Адаптация завершена"),
    ),
    "finance": dict(
        titles=("Согласование счёта", "Возмещение расходов", "Закрытие месяца"),
        pools=("Компания", "Поставщик", "Банк"),
        lanes=("Сотрудник", "Руководитель подразделения", "Бухгалтер", "Финансовый директор", "Казначейство"),
        tasks=("Зарегистрировать счёт", "Сверить счёт с заказом", "Проверить сумму НДС", "Подать авансовый отчёт",
               "Приложить чеки", "Утвердить расходы", "Запланировать платёж", "Перечислить средства",
               "Провести проводку", "Сверить банковскую выписку", "Запросить недостающие документы",
               "Начислить амортизацию", "Подготовить отчёт по бюджету", "Проверить центр затрат",
               "Отправить напоминание об оплате", "Заблокировать поставщика", "Исправить проводку",
               "Сдать документы в архив", "Уведомить поставщика", "Выгрузить данные в 1С", "Проверить курс валют",
               "Подписать платёжное поручение"),
        events=("Конец месяца", "Наступил срок оплаты", "Получено подтверждение банка"),
        decisions=(_d("Суммы совпадают?", *YES_NO_RU), _d("Сумма в пределах бюджета?", *YES_NO_RU),
                   _d("Все чеки приложены?", *YES_NO_RU), _d("Поставщик проверен?", *YES_NO_RU),
                   _d("Счёт оплачен в срок?", *YES_NO_RU), _d("Согласование подписано?", *YES_NO_RU),
                   _d("Какова сумма расходов?", "До 500", "От 500 до 5000", "Свыше 5000"),
                   _d("В какой валюте платёж?", "Рубли", "Евро", "Доллары", "Другая")),
        ends=("Счёт оплачен", "Счёт отклонён", "Расходы возмещены", "Период закрыт", "Передано в аудит"),
    ),
    "it_support": dict(
        titles=("Управление инцидентами", "Заявка в ИТ-службу", "Сброс пароля"),
        pools=("ИТ-отдел", "Пользователь", "Подрядчик"),
        lanes=("Пользователь", "Служба поддержки", "Вторая линия", "Системный администратор", "Подрядчик"),
        tasks=("Зарегистрировать заявку", "Классифицировать инцидент", "Назначить приоритет",
               "Проверить личность пользователя", "Сбросить пароль", "Проверить системные журналы",
               "Перезапустить службу", "Применить известное решение", "Передать на вторую линию",
               "Связаться с подрядчиком", "Установить обновление", "Заменить оборудование", "Проверить исправление",
               "Дополнить базу знаний", "Сообщить пользователю", "Закрыть заявку", "Сделать резервную копию",
               "Выдать права доступа", "Заказать оборудование", "Настроить ноутбук", "Описать причину сбоя",
               "Назначить окно обслуживания"),
        events=("Заявка поступила", "Превышен срок SLA", "Подрядчик ответил"),
        decisions=(_d("Проблема известна?", *YES_NO_RU), _d("Проблема решена?", *YES_NO_RU),
                   _d("Пользователь подтверждён?", *YES_NO_RU), _d("Руководитель одобрил заявку?", *YES_NO_RU),
                   _d("Исправление работает?", *YES_NO_RU), _d("Устройство на гарантии?", *YES_NO_RU),
                   _d("Какой приоритет?", "Высокий", "Средний", "Низкий"),
                   _d("Какой тип заявки?", "Доступ", "Оборудование", "Программы", "Другое")),
        ends=("Заявка закрыта", "Заявка отклонена", "Передано подрядчику", "Доступ выдан", "Оборудование выдано"),
    ),
    "logistics": dict(
        titles=("Планирование перевозки", "Приёмка товара на складе", "Доставка груза"),
        pools=("Транспортная компания", "Грузоотправитель", "Грузополучатель"),
        lanes=("Диспетчер", "Кладовщик", "Водитель", "Таможенный брокер", "Контролёр качества"),
        tasks=("Принять заявку на перевозку", "Построить маршрут", "Назначить машину", "Забронировать окно погрузки",
               "Загрузить машину", "Опломбировать контейнер", "Оформить накладную", "Подать таможенную декларацию",
               "Оплатить пошлину", "Отслеживать груз", "Разгрузить товар", "Пересчитать паллеты",
               "Осмотреть товар на повреждения", "Оприходовать товар", "Разместить товар на хранение",
               "Составить акт о расхождении", "Вернуть товар поставщику", "Подписать накладную",
               "Перенести дату доставки", "Уведомить получателя", "Взвесить груз", "Организовать временное хранение"),
        events=("Машина прибыла", "Таможня пройдена", "Окно доставки пропущено"),
        decisions=(_d("Есть свободная машина?", *YES_NO_RU), _d("Количество совпадает с накладной?", *YES_NO_RU),
                   _d("Товар повреждён?", "Нет", "Да"), _d("Нужно таможенное оформление?", *YES_NO_RU),
                   _d("Вес в пределах нормы?", *YES_NO_RU), _d("Получатель на месте?", *YES_NO_RU),
                   _d("Каким транспортом?", "Авто", "Железная дорога", "Авиа"),
                   _d("Каков результат приёмки?", "Принято", "Принято частично", "Отклонено", "Отложено")),
        ends=("Груз доставлен", "Товар оприходован", "Груз возвращён", "Претензия подана", "Доставка перенесена"),
    ),
    "healthcare": dict(
        titles=("Госпитализация пациента", "Амбулаторный приём", "Продление рецепта"),
        pools=("Клиника", "Пациент", "Лаборатория"),
        lanes=("Пациент", "Регистратура", "Медсестра", "Врач", "Лаборатория"),
        tasks=("Записать на приём", "Зарегистрировать пациента", "Проверить полис ОМС", "Измерить давление и пульс",
               "Собрать анамнез", "Осмотреть пациента", "Назначить анализ крови", "Взять кровь на анализ",
               "Провести анализ", "Изучить результаты анализов", "Поставить диагноз", "Выписать лекарства",
               "Направить к специалисту", "Назначить повторный приём", "Госпитализировать в отделение",
               "Подготовить выписной эпикриз", "Внести запись в медкарту", "Выдать больничный лист",
               "Объяснить план лечения", "Принять оплату", "Продлить рецепт", "Позвонить пациенту"),
        events=("Анализы готовы", "Пациент пришёл", "Наступило время приёма"),
        decisions=(_d("Полис действителен?", *YES_NO_RU), _d("Анализы в норме?", *YES_NO_RU),
                   _d("Нужна госпитализация?", "Нет", "Да"), _d("Состояние стабильно?", *YES_NO_RU),
                   _d("Лечение помогло?", *YES_NO_RU), _d("Специалист принимает сегодня?", *YES_NO_RU),
                   _d("Насколько срочный случай?", "Экстренный", "Срочный", "Плановый"),
                   _d("Какой специалист нужен?", "Кардиолог", "Невролог", "Хирург", "Терапевт")),
        ends=("Пациент выписан", "Пациент госпитализирован", "Направлен к специалисту", "Лечение завершено",
              "Приём отменён"),
    ),
}


def _build() -> dict[tuple[str, str], Vocabulary]:
    return {
        (domain, language): Vocabulary(domain=domain, language=language, **entries[domain])
        for language, entries in (("en", _EN), ("ru", _RU))
        for domain in DOMAINS
    }


VOCABULARIES = _build()


def all_labels(language: str) -> set[str]:
    """Every phrase of a language, for checking that generated labels come from here."""
    labels: set[str] = set()
    for (_, lang), vocabulary in VOCABULARIES.items():
        if lang != language:
            continue
        labels |= {*vocabulary.titles, *vocabulary.pools, *vocabulary.lanes, *vocabulary.tasks, *vocabulary.events}
        labels |= {*vocabulary.ends, *(d.question for d in vocabulary.decisions)}
        labels |= {answer for decision in vocabulary.decisions for answer in decision.answers}
    return labels
